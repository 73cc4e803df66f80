"""Rule adapter: the training dataset of one Replogle hold-out fold."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.replogle.folds import fold_from_files  # noqa: E402

io.setup_rule(snakemake)
fold_from_files(snakemake.input.data, snakemake.input.table, snakemake.params.fold, snakemake.output[0],
                n_effect=snakemake.params.n_effect, n_pcs=snakemake.params.n_pcs,
                controls_in_training=snakemake.params.controls_in_training)
