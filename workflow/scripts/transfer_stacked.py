"""Rule adapter: the transfer protocol and held-out I-NLL of the runs of every seed of one
method and setting, steps 2 and 3 trained as one batched model."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.jobs import transfer_stacked_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
transfer_stacked_from_files(
    {key: list(paths) for key, paths in snakemake.input.items()},
    snakemake.params.train,
    snakemake.params.transfer,
    snakemake.params.device,
    snakemake.params.checkpoint,
    {key: list(paths) for key, paths in snakemake.output.items()},
)
