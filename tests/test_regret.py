"""The criteria of the choice among a method's settings (UDR at 2, 3, 5 models and over all of
them, validation ELBO, target-graph agreement) and what each choice costs (regret.tsv)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sparseshift import io, metrics
from sparseshift.data import trained_perturbations
from sparseshift.jobs import evaluate_from_files
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.runs import mask_agreement, save_model, udr_score
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.summary import REGRET_CHOICE_COLUMNS, REGRET_COLUMNS, regret

LAMBDAS = (1, 10, 100)
# seed -> per lambda (1, 10, 100): Pearson MCC and each criterion's value
GROUPS = {
    0: {"mcc_pearson": (0.55, 0.71, 0.40), "udr_r2": (0.20, 0.18, 0.10), "udr_r3": (0.17, 0.19, 0.10),
        "udr": (0.17, 0.19, 0.10), "elbo_val": (-300.0, -290.0, -310.0), "mask_agreement": (0.5, 0.5, 0.4)},
    1: {"mcc_pearson": (0.60, 0.80, 0.70), "udr_r2": (0.30, 0.30, 0.40), "udr_r3": (0.20, 0.35, 0.30),
        "udr": (0.20, 0.35, 0.30), "elbo_val": (-250.0, -260.0, -240.0), "mask_agreement": (0.6, 0.7, 0.6)},
}


def _summary() -> pd.DataFrame:
    """sVAE at three lambdas on two seeds (GROUPS); VAE and sVAE+ with one setting each; a fold
    without ground truth where sVAE has two settings."""
    rows = []
    for seed, values in GROUPS.items():
        rows.append({"simulation": "sim", "method": "vae", "seed": seed, "run": "p15", "n_latent": 15,
                     "mcc_pearson": 0.5, "elbo_val": -280.0})
        for i, lam in enumerate(LAMBDAS):
            rows.append({"simulation": "sim", "method": "svae", "seed": seed, "run": f"p15_lambda{lam}",
                         "n_latent": 15, **{key: v[i] for key, v in values.items()}})
        rows.append({"simulation": "sim", "method": "svae_plus", "seed": seed, "run": "p15_alpha10",
                     "n_latent": 15, "mcc_pearson": 0.9, "elbo_val": -280.0})
    for lam in (1, 10):
        rows.append({"simulation": "fold0", "method": "svae", "seed": 0, "run": f"p15_lambda{lam}",
                     "n_latent": 15, "mcc_pearson": np.nan, "udr": 0.2, "elbo_val": -100.0 * lam})
    return pd.DataFrame(rows)


def test_regret_of_each_criterion_per_seed_and_over_seeds():
    choices, table = regret(_summary())
    assert list(choices.columns) == ["simulation"] + REGRET_CHOICE_COLUMNS
    assert list(table.columns) == ["simulation"] + REGRET_COLUMNS
    # only sVAE on the simulation chooses: one setting, or no ground truth, gives no row
    assert set(choices["method"]) == {"svae"} and set(choices["simulation"]) == {"sim"}
    got = choices.set_index(["seed", "criterion"])
    # seed 0: UDR at 2 models picks lambda 1 (MCC 0.55) over the best, lambda 10 (0.71)
    assert got.loc[(0, "udr_r2"), ["chosen", "best"]].tolist() == ["p15_lambda1", "p15_lambda10"]
    assert got.loc[(0, "udr_r2"), "regret"] == pytest.approx(0.16)
    udr_r2 = got.loc[(0, "udr_r2")]
    assert [udr_r2["value"], udr_r2["mcc_chosen"], udr_r2["mcc_best"]] == pytest.approx([0.2, 0.55, 0.71])
    # the validation ELBO (higher is better) picks the best on seed 0, lambda 100 on seed 1
    assert got.loc[(0, "elbo_val"), "chosen"] == "p15_lambda10" and got.loc[(0, "elbo_val"), "regret"] == 0
    assert got.loc[(1, "elbo_val"), "chosen"] == "p15_lambda100"
    assert got.loc[(1, "elbo_val"), "regret"] == pytest.approx(0.10)
    # ties go to the first setting in run order, as the selection's
    assert got.loc[(0, "mask_agreement"), "chosen"] == "p15_lambda1"
    assert got.loc[(1, "udr_r2"), "chosen"] == "p15_lambda100"
    assert (choices["candidates"] == 3).all() and (choices["regret"] >= 0).all()
    table = table.set_index("criterion")
    # in the order of summary.CRITERIA; udr_r5 absent: no setting has 5 models
    assert list(table.index) == ["udr_r2", "udr_r3", "udr", "elbo_val", "mask_agreement"]
    assert table["choices"].eq(2).all()
    assert table.loc["udr_r2", ["mean_regret", "max_regret"]].tolist() == pytest.approx([0.13, 0.16])
    assert table.loc["udr_r2", "best_chosen"] == "0 of 2" and table.loc["udr_r3", "best_chosen"] == "2 of 2"
    assert table.loc["elbo_val", ["mean_regret", "max_regret"]].tolist() == pytest.approx([0.05, 0.10])
    assert table.loc["elbo_val", "best_chosen"] == "1 of 2"
    assert table.loc["mask_agreement", "best_chosen"] == "1 of 2"
    assert table.loc["udr_r3", ["mcc_chosen", "mcc_best"]].tolist() == pytest.approx([0.755, 0.755])
    assert table.loc["udr_r2", "mcc_chosen"] == pytest.approx((0.55 + 0.70) / 2)


def test_regret_without_a_choice_is_an_empty_table_with_its_header(tmp_path):
    summary = _summary()
    choices, table = regret(summary[summary["method"] != "svae"])
    assert choices.empty and table.empty
    io.write_tsv(table, tmp_path / "regret.tsv")
    assert (tmp_path / "regret.tsv").read_text().strip().split("\t") == ["simulation"] + REGRET_COLUMNS
    # a group where no run has a score for a criterion has no row for it
    choices, _ = regret(summary.drop(columns=["udr_r2", "udr_r3", "mask_agreement"]))
    assert set(choices["criterion"]) == {"udr", "elbo_val"}


def test_udr_of_the_first_models_equals_udr_of_those_models():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3))
    models = [z @ rng.normal(size=(3, 3)) + 0.3 * rng.normal(size=(300, 3)) for _ in range(6)]
    scores = udr_score(models[:4])
    assert scores["udr_models"] == 4 and "udr_r5" not in scores
    assert scores["udr_r2"] == pytest.approx(metrics.udr(models[:2]))
    assert scores["udr_r3"] == pytest.approx(metrics.udr(models[:3]))
    # over all models, the median of every pair, as before
    pairs = [metrics.udr_pair(models[i], models[j]) for i in range(4) for j in range(i + 1, 4)]
    assert scores["udr"] == pytest.approx(np.median(pairs))
    assert udr_score(models)["udr_r5"] == pytest.approx(metrics.udr(models[:5]))
    two = metrics.udr(models[:2])
    assert udr_score(models[:2]) == {"udr": two, "udr_models": 2, "udr_r2": two}
    assert np.isnan(udr_score(models[:1])["udr"])


@pytest.fixture(scope="module")
def data():
    return simulate(SimulationConfig(n_latent=4, n_perturbations=12, n_heldout=3,
                                     cells_per_perturbation=50, n_genes=20, seed=3))


def _model(data, graph: np.ndarray) -> SparseShiftVAE:
    """An sVAE+ whose learned target graph is ``graph``."""
    cfg = ModelConfig(method="svae_plus", n_genes=data.n_vars, n_latent=4, n_perturbations=12,
                      hyperparameters={"alpha": 12.0})
    model = SparseShiftVAE(cfg)
    with torch.no_grad():
        model.prior.logits.copy_(torch.as_tensor(np.where(graph, 6.0, -6.0)))
    return model


def test_mask_agreement_matches_latents_before_comparing_graphs(data):
    z, targets = np.asarray(data.obsm["z_true"]), np.asarray(data.uns["targets"]).astype(bool)
    perm = np.array([2, 0, 3, 1])
    # the same graph learned with its latents permuted (and rescaled): full agreement
    assert mask_agreement(data, [z, -2 * z[:, perm]], [targets, targets[:, perm]]) == pytest.approx(1.0)
    # unmatched, the same permuted graph disagrees
    assert mask_agreement(data, [z, z], [targets, targets[:, perm]]) < 1
    # a replicate's graph with every latent a target of the first trained perturbation: of the
    # three pairs, two overlap by Dice 2|A| / (2|A| + extra edges), on the trained rows only
    rows = trained_perturbations(data)
    assert len(rows) < len(targets)  # held-out rows play no part
    other = targets.copy()
    other[rows[0]] = True
    edges, extra = targets[rows].sum(), 4 - targets[rows[0]].sum()
    dice = 2 * edges / (2 * edges + extra)
    assert mask_agreement(data, [z, z, z], [targets, targets, other]) == pytest.approx((1 + 2 * dice) / 3)
    held_out = np.setdiff1d(np.arange(len(targets)), rows)
    changed = targets.copy()
    changed[held_out] = ~changed[held_out]
    assert mask_agreement(data, [z, z], [targets, changed]) == pytest.approx(1.0)


def test_the_evaluation_writes_the_criteria_from_the_replicates_beside_their_latents(data, tmp_path):
    """metrics.json of a run with two replicates: UDR over 2 and 3 models (the latter the UDR of
    all), and the agreement of the three target graphs, read from the replicates' folders."""
    z, targets = np.asarray(data.obsm["z_true"]), np.asarray(data.uns["targets"]).astype(bool)
    rng = np.random.default_rng(1)
    perm = np.array([2, 0, 3, 1])
    latents = [z, z[:, perm] + 0.5 * rng.normal(size=z.shape), z + rng.normal(size=z.shape)]
    graphs = [targets, targets[:, perm], targets]
    folders = [tmp_path / "run", tmp_path / "run" / "replicate1", tmp_path / "run" / "replicate2"]
    for folder, zs, graph in zip(folders, latents, graphs):
        folder.mkdir(parents=True, exist_ok=True)
        save_model(_model(data, graph), folder / "model.pt", folder / "model.json")
        np.savez(folder / "latents.npz", z_mean=zs.astype(np.float32), obs_names=np.asarray(data.obs_names))
    io.write_h5ad(data, tmp_path / "data.h5ad")
    (tmp_path / "run" / "train_info.json").write_text(json.dumps({"elbo_val": -123.0, "code_version": "x"}))
    inputs = {"data": tmp_path / "data.h5ad", "weights": folders[0] / "model.pt",
              "config": folders[0] / "model.json", "latents": folders[0] / "latents.npz",
              "info": tmp_path / "run" / "train_info.json", "heldout": [],
              "replicates": [f / "latents.npz" for f in folders[1:]]}
    out = evaluate_from_files(inputs, {"method": "svae_plus"}, tmp_path / "metrics.json")
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["udr_models"] == 3 and "udr_r5" not in written
    assert written["udr_r2"] == pytest.approx(metrics.udr(latents[:2], 0.01), rel=1e-5)
    assert written["udr_r3"] == written["udr"] == pytest.approx(metrics.udr(latents, 0.01), rel=1e-5)
    assert written["elbo_val"] == -123.0
    # the replicates learned the run's graph (replicate 1 with its latents permuted)
    assert written["mask_agreement"] == pytest.approx(1.0) == out["mask_agreement"]
    # a replicate's different graph lowers it
    save_model(_model(data, ~targets), folders[2] / "model.pt", folders[2] / "model.json")
    assert evaluate_from_files(inputs, {}, tmp_path / "metrics2.json")["mask_agreement"] < 1
    # a run without replicates has neither
    single = evaluate_from_files({**inputs, "replicates": []}, {}, tmp_path / "metrics3.json")
    assert np.isnan(single["udr"]) and "udr_r2" not in single and "mask_agreement" not in single
