"""Rule adapter: the Replogle perturbations x genes selected from the raw h5ad (Table S3)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.replogle.preprocessing import preprocess  # noqa: E402

io.setup_rule(snakemake)
preprocess(
    snakemake.input.h5ad,
    snakemake.input.table,
    snakemake.output[0],
    max_controls=snakemake.params.max_controls,
)
