"""Rule adapter: disentanglement and target-identification metrics of one run, and the
unsupervised selection score (UDR) of its setting."""

from sparseshift import io
from sparseshift.run import evaluate_from_files

io.configure_logging(snakemake.log[0])
evaluate_from_files(
    dict(snakemake.input.items()),
    snakemake.params.record,
    snakemake.output[0],
    snakemake.params.udr_min_variance,
)
