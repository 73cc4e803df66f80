"""Rule adapter: steps 2 and 3 of the transfer protocol and the held-out I-NLL of one run."""

import torch

from sparseshift import io
from sparseshift.run import transfer_from_files

io.configure_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
transfer_from_files(
    dict(snakemake.input.items()),
    snakemake.params.train,
    snakemake.params.transfer,
    snakemake.params.device,
    snakemake.params.checkpoint,
    dict(snakemake.output.items()),
)
