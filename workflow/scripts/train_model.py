"""Rule adapter: train one model on one dataset."""

import torch

from sparseshift import io
from sparseshift.run import train_from_files

io.configure_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
train_from_files(
    snakemake.input.data,
    snakemake.params.model,
    snakemake.params.train,
    snakemake.params.device,
    snakemake.params.checkpoint,
    dict(snakemake.output.items()),
)
