"""Rule adapter: gene scores, gene-set enrichment and targets of the latents of one run."""

import torch

from sparseshift import io
from sparseshift.run import enrichment_from_files

io.configure_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inputs = dict(snakemake.input.items())
inputs["libraries"] = list(snakemake.input.libraries)
enrichment_from_files(inputs, snakemake.params.settings, dict(snakemake.output.items()))
