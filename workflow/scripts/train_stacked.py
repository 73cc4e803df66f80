"""Rule adapter: train several runs of one method (seeds, settings, replicates) as one batched model."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.jobs import train_stacked_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
train_stacked_from_files(
    list(snakemake.input.data),
    snakemake.params.model,
    snakemake.params.train,
    snakemake.params.device,
    snakemake.params.checkpoint,
    {key: list(paths) for key, paths in snakemake.output.items()},
)
