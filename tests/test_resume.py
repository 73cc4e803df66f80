"""A training or transfer job killed with SIGKILL halfway resumes from its checkpoint and ends
with the numbers of an uninterrupted run (one model and a stack)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from sparseshift.io import write_h5ad
from sparseshift.model import SparseShiftVAE
from sparseshift.data import load_latents
from sparseshift.io import read_dataset
from sparseshift.runs import evaluate_run
from sparseshift.simulate import SimulationConfig, simulate

MODEL = {"method": "svae_plus", "n_latent": 3, "hyperparameters": {"alpha": 8.0}}
TRAIN = {"epochs": 4, "batch_size": 32, "warmup_epochs": 2, "checkpoint_every": 2, "seed": 0}
TRANSFER = {"retrain_epochs": 4, "retrain_patience": None, "finetune_epochs": 2, "particles": 20}
RUN_FILES = {"weights": "model.pt", "config": "model.json", "history": "history.tsv", "latents": "latents.npz",
             "info": "train_info.json"}
TRANSFER_FILES = {
    "summary": "heldout.json", "per_perturbation": "heldout_perturbations.tsv",
    "retrained_weights": "retrained.pt", "retrained_config": "retrained.json",
    "finetuned_weights": "finetuned.pt", "finetuned_config": "finetuned.json",
    "retrain_history": "retrain_history.tsv", "finetune_history": "finetune_history.tsv",
}
TIMINGS = {"train_seconds", "seconds_per_epoch", "retrain_seconds", "finetune_seconds", "iwelbo_seconds",
           "code_version"}


def job(function: str, args: list, kill_in: str | None = None) -> int:
    """``sparseshift.jobs.<function>(*args)`` in a new process, as a rule script runs it; with
    ``kill_in`` (``train``, the module of the training loop of one model and of a stack)
    the process SIGKILLs itself right after that module wrote its first checkpoint. Returns
    the exit status."""
    code = textwrap.dedent(f"""
        import contextlib, os, signal
        import torch
        import sparseshift.{kill_in or 'train'} as module
        from sparseshift.jobs import {function}

        torch.set_num_threads(1)
        written = module.atomic_path

        @contextlib.contextmanager
        def killed_after_checkpoint(path):
            with written(path) as tmp:
                yield tmp
            os.kill(os.getpid(), signal.SIGKILL)  # the checkpoint is complete: killed halfway

        if {kill_in is not None}:
            module.atomic_path = killed_after_checkpoint
        {function}(*{args!r})
    """)
    return subprocess.run([sys.executable, "-c", code]).returncode


def outputs(folder, files: dict) -> dict:
    return {key: str(folder / name) for key, name in files.items()}


def one_run(files: dict) -> dict:
    """A one-model job's files as the job functions take them: a list of one per entry."""
    return {key: [path] for key, path in files.items()}


def same_run_files(a: dict, b: dict) -> None:
    """Two runs' files hold the same numbers (timings aside)."""
    for key, path in a.items():
        if path.endswith(".pt"):
            sa, sb = torch.load(path, weights_only=True), torch.load(b[key], weights_only=True)
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), path
        elif path.endswith(".tsv"):
            ta, tb = (pd.read_csv(p, sep="\t").drop(columns=["train_seconds"], errors="ignore") for p in (path, b[key]))
            pd.testing.assert_frame_equal(ta, tb, check_exact=True)
        elif path.endswith(".npz"):
            np.testing.assert_array_equal(load_latents(path), load_latents(b[key]))
        else:
            ja, jb = (json.loads(open(p).read()) for p in (path, b[key]))
            assert {k: v for k, v in ja.items() if k not in TIMINGS} == {k: v for k, v in jb.items() if k not in TIMINGS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "data.h5ad"
    write_h5ad(simulate(SimulationConfig(n_latent=3, n_perturbations=8, n_heldout=2, cells_per_perturbation=40,
                                         n_genes=15, decoder_hidden=8, seed=0)), path)
    return str(path)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> dict:
    """The files of an uninterrupted training job."""
    run = outputs(tmp_path_factory.mktemp("trained"), RUN_FILES)
    args = [[dataset], [MODEL], [TRAIN], "cpu", run["weights"] + ".checkpoint", one_run(run), False]
    assert job("train_from_files", args) == 0
    return run


def test_a_killed_training_job_resumes_to_the_numbers_of_an_uninterrupted_one(dataset, trained, tmp_path):
    killed, checkpoint = outputs(tmp_path / "killed", RUN_FILES), tmp_path / "checkpoints" / "run.pt"
    args = [[dataset], [MODEL], [TRAIN], "cpu", str(checkpoint), one_run(killed), False]
    assert job("train_from_files", args, kill_in="train") == -signal.SIGKILL
    assert checkpoint.exists() and not (tmp_path / "killed").exists()
    assert job("train_from_files", args) == 0  # the rerun resumes at epoch 2
    assert not checkpoint.exists()
    same_run_files(trained, killed)
    assert len(pd.read_csv(killed["history"], sep="\t")) == 4
    adata = read_dataset(dataset)
    metrics = [evaluate_run(adata, SparseShiftVAE.load(run["weights"], run["config"]), load_latents(run["latents"]))
               for run in (trained, killed)]
    assert metrics[0] == metrics[1]


def test_a_killed_transfer_job_resumes_to_the_numbers_of_an_uninterrupted_one(dataset, trained, tmp_path):
    inputs = one_run({"data": dataset, **{key: trained[key] for key in ("weights", "config", "info")}})
    straight = outputs(tmp_path / "straight", TRANSFER_FILES)
    args = [inputs, [TRAIN], TRANSFER, "cpu", str(tmp_path / "a.pt"), one_run(straight), False]
    assert job("transfer_from_files", args) == 0
    killed, checkpoint = outputs(tmp_path / "killed", TRANSFER_FILES), tmp_path / "run.transfer.pt"
    args = [inputs, [TRAIN], TRANSFER, "cpu", str(checkpoint), one_run(killed), False]
    assert job("transfer_from_files", args, kill_in="train") == -signal.SIGKILL  # in step 2, at epoch 2
    assert checkpoint.exists() and not (tmp_path / "killed").exists()
    assert job("transfer_from_files", args) == 0
    assert not checkpoint.exists()
    same_run_files(straight, killed)
    assert np.isfinite(json.loads(open(killed["summary"]).read())["inll"])


def test_a_killed_stacked_training_job_resumes_to_the_numbers_of_an_uninterrupted_one(dataset, tmp_path):
    seeds = [0, 1000]

    def stacked(folder):
        return {key: [str(tmp_path / folder / f"seed{s}" / name) for s in seeds] for key, name in RUN_FILES.items()}

    straight, killed = stacked("straight"), stacked("killed")
    models = [MODEL, {**MODEL, "hyperparameters": {"alpha": 20.0}}]  # two settings of sVAE+ in one stack
    train = [{**TRAIN, "seed": s} for s in seeds]
    assert job("train_from_files", [[dataset] * 2, models, train, "cpu", str(tmp_path / "a.pt"), straight,
                                    True]) == 0
    checkpoint = tmp_path / "stack.pt"
    args = [[dataset] * 2, models, train, "cpu", str(checkpoint), killed, True]
    assert job("train_from_files", args, kill_in="train") == -signal.SIGKILL
    assert checkpoint.exists() and not (tmp_path / "killed").exists()
    assert job("train_from_files", args) == 0
    assert not checkpoint.exists()
    for i in range(len(seeds)):
        same_run_files({k: v[i] for k, v in straight.items()}, {k: v[i] for k, v in killed.items()})


def test_a_killed_stacked_transfer_job_resumes_to_the_numbers_of_an_uninterrupted_one(dataset, trained, tmp_path):
    """Two runs (seeds 0 and 1 of one trained model) through the stacked transfer, killed in
    step 2 after its first checkpoint, with early stopping on (a run may already have left
    the stack): the rerun ends with the files of an uninterrupted job."""
    train = [{**TRAIN, "seed": s} for s in (0, 1)]
    transfer = {**TRANSFER, "retrain_epochs": 6, "retrain_patience": 1}
    inputs = {"data": [dataset] * 2, **{key: [trained[key]] * 2 for key in ("weights", "config", "info")}}

    def stacked(folder):
        return {key: [str(tmp_path / folder / f"seed{s}" / name) for s in (0, 1)] for key, name in TRANSFER_FILES.items()}

    straight, killed = stacked("straight"), stacked("killed")
    args = [inputs, train, transfer, "cpu", str(tmp_path / "a.pt"), straight, True]
    assert job("transfer_from_files", args) == 0
    checkpoint = tmp_path / "stack.transfer.pt"
    args = [inputs, train, transfer, "cpu", str(checkpoint), killed, True]
    assert job("transfer_from_files", args, kill_in="train") == -signal.SIGKILL
    assert checkpoint.exists() and not (tmp_path / "killed").exists()
    assert job("transfer_from_files", args) == 0
    assert not checkpoint.exists()
    for i in range(2):
        same_run_files({k: v[i] for k, v in straight.items()}, {k: v[i] for k, v in killed.items()})
        assert np.isfinite(json.loads(open(killed["summary"][i]).read())["inll"])
