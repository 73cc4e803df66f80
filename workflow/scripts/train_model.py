"""Rule adapter: train one model on one dataset."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.jobs import train_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
train_from_files(
    snakemake.input.data,
    snakemake.params.model,
    snakemake.params.train,
    snakemake.params.device,
    snakemake.params.checkpoint,
    dict(snakemake.output.items()),
)
