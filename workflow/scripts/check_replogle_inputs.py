"""Rule adapter: the cheap checks of the Replogle inputs (h5ad, Table S3, the folds' clusters),
before preprocessing clears its previous output."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.replogle.h5ad import check_inputs  # noqa: E402

io.setup_rule(snakemake)
io.write_json(check_inputs(snakemake.input.h5ad, snakemake.input.table, snakemake.params.folds), snakemake.output[0])
