"""Rule adapter: steps 2 and 3 of the transfer protocol and the held-out I-NLL of one run."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.jobs import transfer_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
transfer_from_files(
    dict(snakemake.input.items()),
    snakemake.params.train,
    snakemake.params.transfer,
    snakemake.params.device,
    snakemake.params.checkpoint,
    dict(snakemake.output.items()),
)
