"""Rule adapter: gene scores, gene-set enrichment and targets of the latents of one run."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.enrichment import enrichment_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
inputs = dict(snakemake.input.items())
inputs["libraries"] = list(snakemake.input.libraries)
enrichment_from_files(inputs, snakemake.params.settings, dict(snakemake.output.items()))
