"""Rule adapter: a training job (the rules of train.smk, one per job): one model on one dataset,
or several runs of one method (seeds, settings, replicates) as one batched model (the
train_stack_* rules, through train_stacked.py: a link to this file, kept because Snakemake
records each rule's script path and would re-run the existing results of a rule whose path
changed)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import torch  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.jobs import train_from_files  # noqa: E402

io.setup_rule(snakemake)
torch.set_num_threads(snakemake.threads)
stacked, runs = io.job_runs(snakemake)
train_from_files(
    runs(snakemake.input.data),
    runs(snakemake.params.model),
    runs(snakemake.params.train),
    snakemake.params.device,
    snakemake.params.checkpoint,
    {key: runs(paths) for key, paths in snakemake.output.items()},
    stacked,
)
