"""Rule adapter: the training dataset of one Replogle hold-out fold."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.io import read_dataset  # noqa: E402
from sparseshift.replogle.folds import fold_perturbations, make_fold  # noqa: E402
from sparseshift.replogle.table_s3 import expression_programs, read_table_s3  # noqa: E402

io.setup_rule(snakemake)
path = snakemake.input.data
adata = read_dataset(path)
clusters, _ = read_table_s3(snakemake.input.table)
fold = snakemake.params.fold
heldout = fold_perturbations(
    adata, fold, clusters, n_effect=snakemake.params.n_effect, n_pcs=snakemake.params.n_pcs, path=path
)
keep_controls = snakemake.params.controls_in_training
dataset = make_fold(adata, heldout, fold["name"], keep_controls_in_training=keep_controls, path=path)
dataset.uns["gene_sets"] = expression_programs(snakemake.input.table)  # for the enrichment rule
io.write_h5ad(dataset, snakemake.output[0])
