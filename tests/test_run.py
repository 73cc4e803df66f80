"""Evaluation wiring of a run and the checks on input datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sparseshift.io import InputError, write_h5ad
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.run import count_matrix, evaluate_run, perturbation_labels, read_dataset
from sparseshift.simulate import SimulationConfig, simulate


@pytest.fixture(scope="module")
def data():
    return simulate(SimulationConfig(n_latent=4, n_perturbations=12, n_heldout=3,
                                     cells_per_perturbation=50, n_genes=20, seed=3))


def oracle_model(data, method, perm):
    """A model whose learned graph is the true one with latents permuted by ``perm``."""
    targets = np.asarray(data.uns["targets"]).astype(bool)
    cfg = ModelConfig(method=method, n_genes=data.n_vars, n_latent=4, n_perturbations=12, alpha=12.0)
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
