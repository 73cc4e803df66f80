"""Rule adapter: a transfer job (the rules of evaluate.smk, one per job), steps 2 and 3 of the transfer protocol and the held-out I-NLL of
one run as one model or of the runs of every seed of one method and setting as
one batched model (the transfer_stack_* rules, through transfer_stacked.py: a link to this file,
kept because Snakemake records each rule's script path and would re-run the existing results of
a rule whose path changed)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.jobs import transfer_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
stacked, runs = io.job_runs(snakemake)
transfer_from_files(
    {key: runs(paths) for key, paths in snakemake.input.items()},
    runs(snakemake.params.train),
    snakemake.params.transfer,
    snakemake.params.device,
    snakemake.params.checkpoint,
    {key: runs(paths) for key, paths in snakemake.output.items()},
    stacked,
)
