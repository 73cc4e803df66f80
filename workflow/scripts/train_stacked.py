"""Rule adapter: train the runs of every seed of one method and setting as one batched model."""

import torch

from sparseshift import io
from sparseshift.run import train_stacked_from_files

io.configure_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
train_stacked_from_files(
    list(snakemake.input.data),
    snakemake.params.model,
    snakemake.params.train,
    snakemake.params.seeds,
    snakemake.params.device,
    snakemake.params.checkpoint,
    {key: list(paths) for key, paths in snakemake.output.items()},
)
