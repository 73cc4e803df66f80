"""Rule adapter: disentanglement and target-identification metrics of one run, and the
unsupervised selection score (UDR) of its setting."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.jobs import evaluate_from_files  # noqa: E402

io.setup_rule(snakemake)
evaluate_from_files(
    dict(snakemake.input.items()),
    snakemake.params.record,
    snakemake.output[0],
    snakemake.params.udr_min_variance,
)
