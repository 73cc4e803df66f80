"""Rule adapter: the Replogle perturbations x genes selected from the raw h5ad (Table S3)."""

from sparseshift import io
from sparseshift.replogle import preprocess

io.configure_logging(snakemake.log[0])
preprocess(
    snakemake.input.h5ad,
    snakemake.input.table,
    snakemake.output[0],
    max_controls=snakemake.params.max_controls,
)
