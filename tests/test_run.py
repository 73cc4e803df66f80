"""Evaluation wiring of a run and the checks on input datasets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sparseshift.io import InputError, write_h5ad
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.data import count_matrix, load_latents, perturbation_labels
from sparseshift.io import read_dataset
from sparseshift.runs import evaluate_run
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.train import TrainConfig, TrainingDiverged


@pytest.fixture(scope="module")
def data():
    return simulate(SimulationConfig(n_latent=4, n_perturbations=12, n_heldout=3,
                                     cells_per_perturbation=50, n_genes=20, seed=3))


def oracle_model(data, method, perm):
    """A model whose learned graph is the true one with latents permuted by ``perm``."""
    targets = np.asarray(data.uns["targets"]).astype(bool)
    cfg = ModelConfig(method=method, n_genes=data.n_vars, n_latent=4, n_perturbations=12, hyperparameters={"alpha": 12.0})
    model = SparseShiftVAE(cfg)
    learned = targets[:, perm]
    with torch.no_grad():
        if method == "ivae":
            model.prior.mu.copy_(torch.as_tensor(np.asarray(data.uns["shifts"])[:, perm]))
        else:
            model.prior.logits.copy_(torch.as_tensor(np.where(learned, 6.0, -6.0)))
    return model


def test_perfect_recovery_scores_one(data):
    perm = np.array([2, 0, 3, 1])
    latents = -3.0 * np.asarray(data.obsm["z_true"])[:, perm] + 1.0
    out = evaluate_run(data, oracle_model(data, "svae_plus", perm), latents)
    assert out["mcc_pearson"] == pytest.approx(1.0) and out["mcc_spearman"] == pytest.approx(1.0)
    assert out["r2"] == pytest.approx(1.0)
    for key in ("graph_precision", "graph_recall", "graph_f1", "graph_auprc"):
        assert out[key] == pytest.approx(1.0), key
    # held-out perturbations (never trained) count as misses in the *_all variant
    assert out["graph_precision_all"] == pytest.approx(1.0)
    assert out["graph_recall_all"] < 1.0
    # every learned latent is sign-flipped: the released code's signed matching pairs them
    # with other latents, so its graph scores drop although the graph is perfect
    assert out["graph_f1_signed"] < out["graph_f1_all"]


def test_signed_convention_equals_all_perturbations_without_flips(data):
    perm = np.array([2, 0, 3, 1])
    latents = 3.0 * np.asarray(data.obsm["z_true"])[:, perm] + 1.0
    out = evaluate_run(data, oracle_model(data, "svae_plus", perm), latents)
    for key in ("graph_precision", "graph_recall", "graph_f1", "graph_auprc"):
        assert out[key + "_signed"] == pytest.approx(out[key + "_all"]), key


def test_wrong_matching_is_penalised(data):
    perm = np.array([2, 0, 3, 1])
    latents = np.asarray(data.obsm["z_true"])  # unpermuted latents, permuted graph
    out = evaluate_run(data, oracle_model(data, "svae_plus", perm), latents)
    assert out["mcc_pearson"] == pytest.approx(1.0)
    assert out["graph_f1"] < 0.8


def test_methods_without_graph_have_no_graph_metrics(data):
    model = SparseShiftVAE(ModelConfig(method="vae", n_genes=data.n_vars, n_latent=4, n_perturbations=12))
    out = evaluate_run(data, model, np.asarray(data.obsm["z_true"]))
    assert "graph_f1" not in out and out["mcc_pearson"] == pytest.approx(1.0)


def test_missing_column_names_file_and_field(data, tmp_path):
    bad = data.copy()
    del bad.obs["split"]
    path = tmp_path / "bad.h5ad"
    write_h5ad(bad, path)
    with pytest.raises(InputError, match=r"bad\.h5ad: field 'obs/split'"):
        perturbation_labels(read_dataset(path), path)


def test_negative_counts_rejected(data):
    bad = data.copy()
    bad.X[0, 0] = -1
    with pytest.raises(InputError, match="field 'X'"):
        count_matrix(bad, "x.h5ad")


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.h5ad"
    path.write_text("not hdf5")
    with pytest.raises(InputError, match="broken.h5ad"):
        read_dataset(path)


def train_files(tmp_path, data, lr=1e-3, epochs=3):
    """train_from_files on ``data`` written to tmp_path: (outputs, checkpoint)."""
    from sparseshift.jobs import train_from_files

    path = tmp_path / "data.h5ad"
    if not path.exists():
        write_h5ad(data, path)
    run = tmp_path / "results" / "sim" / "seed3" / "svae_plus" / "p4"
    outputs = {key: str(run / name) for key, name in [("weights", "model.pt"), ("config", "model.json"),
               ("history", "history.tsv"), ("latents", "latents.npz"), ("info", "train_info.json")]}
    model = {"method": "svae_plus", "n_latent": 4, "hyperparameters": {"alpha": 12.0}}
    train = {"epochs": epochs, "batch_size": 64, "warmup_epochs": 1, "lr": lr, "checkpoint_every": 1, "seed": 3}
    checkpoint = tmp_path / "checkpoints" / "run.pt"
    train_from_files([path], [model], [train], "cpu", checkpoint, {key: [p] for key, p in outputs.items()},
                     False)
    return outputs, checkpoint


def test_a_diverging_training_job_names_its_run_and_writes_no_model(data, tmp_path):
    with pytest.raises(TrainingDiverged) as err:
        train_files(tmp_path, data, lr=1e5)
    message = str(err.value)
    assert "results/sim/seed3/svae_plus/p4" in message and "loss became non-finite in epoch 1" in message
    assert "train.lr" in message
    assert not list((tmp_path / "results").rglob("*.*"))  # no model, no latents, nothing


def test_a_diverging_training_job_removes_its_checkpoint(data, tmp_path, monkeypatch):
    """Diverging in epoch 3 after the checkpoints of epochs 1 and 2: the checkpoint goes too,
    so that a rerun with another learning rate does not resume the diverging run."""
    from sparseshift import train

    check, checkpoint = train.check_epoch, tmp_path / "checkpoints" / "run.pt"
    existed = []

    def diverge_in_epoch_3(means, elbo_val, has_val, weights_finite, epoch, lr, member=None):
        if epoch == 3:
            existed.append(checkpoint.exists())
            means = [float("nan")]
        check(means, elbo_val, has_val, weights_finite, epoch, lr, member)

    monkeypatch.setattr(train, "check_epoch", diverge_in_epoch_3)
    with pytest.raises(TrainingDiverged, match="epoch 3"):
        train_files(tmp_path, data)
    assert existed == [True] and not checkpoint.exists()
    assert not (tmp_path / "results" / "sim" / "seed3" / "svae_plus" / "p4" / "model.pt").exists()


def test_non_finite_latents_are_refused(tmp_path):
    path = tmp_path / "latents.npz"
    np.savez(path, z_mean=np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32))
    with pytest.raises(InputError, match=r"latents\.npz: field 'z_mean' — expected finite posterior means"):
        load_latents(path)


def test_a_resumed_run_reports_the_time_of_all_its_epochs(data, tmp_path):
    """train_seconds of a run resumed from its checkpoint: the sum over every epoch of its
    history, those of the killed attempt included."""
    from sparseshift.runs import train_runs

    cfg = ModelConfig(method="svae_plus", n_genes=data.n_vars, n_latent=4, n_perturbations=12, hyperparameters={"alpha": 12.0})
    ckpt = tmp_path / "run.pt"
    train_cfg = TrainConfig(epochs=3, batch_size=64, warmup_epochs=1, checkpoint_every=1, seed=3)
    # checkpoints after epochs 1 and 2, not after the last: stands for a job killed in epoch 3
    (_, first, _, _), = train_runs([data], [cfg], [train_cfg], "cpu", ckpt, stacked=False)
    (_, history, _, info), = train_runs([data], [cfg], [replace(train_cfg, epochs=4)], "cpu", ckpt,
                                        stacked=False)
    assert info["epochs_run"] == 4
    assert history["train_seconds"].iloc[:2].tolist() == first["train_seconds"].iloc[:2].tolist()
    assert info["train_seconds"] == history["train_seconds"].sum()
    assert info["seconds_per_epoch"] == info["train_seconds"] / 4


@pytest.mark.parametrize("new_lr, resumed", [(1e-3, True), (5e-3, False)])
def test_a_checkpoint_is_resumed_only_with_the_settings_it_was_made_with(data, tmp_path, monkeypatch, caplog, new_lr,
                                                                          resumed):
    """A job killed in epoch 3 (checkpoints after epochs 1 and 2) and run again: with the same
    settings it resumes at epoch 2; with another train.lr it starts over, saying why."""
    import logging

    from sparseshift import train

    check = train.check_epoch

    def killed_in_epoch_3(means, elbo_val, has_val, weights_finite, epoch, lr, member=None):
        if epoch == 3:
            raise KeyboardInterrupt  # stands for a killed job: the checkpoint stays
        check(means, elbo_val, has_val, weights_finite, epoch, lr, member)

    monkeypatch.setattr(train, "check_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_files(tmp_path, data)
    monkeypatch.setattr(train, "check_epoch", check)
    with caplog.at_level(logging.INFO):
        outputs, checkpoint = train_files(tmp_path, data, lr=new_lr, epochs=4)
    assert ("resumed from" in caplog.text) == resumed  # more epochs than the killed run: still resumable
    assert ("train.lr 0.001 -> 0.005" in caplog.text) == (not resumed)
    assert not checkpoint.exists() and not list(checkpoint.parent.glob("*.settings.json"))
