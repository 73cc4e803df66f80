"""Combinations of perturbations as multi-hot interventions (issue 29, point 1): a cell's prior
mean is the sum of its perturbations' shifts, in one model and in a stack; simulations,
datasets and screens with combinations."""

from __future__ import annotations

import copy
import hashlib
import json

import anndata
import numpy as np
import pytest
import torch
from fixtures.screens import screen_adata, screen_settings
from sparseshift.batched import ModelStack
from sparseshift.data import RunData, dataset_perturbations, perturbation_labels, trained_perturbations
from sparseshift.jobs import run_model_config
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.runs import evaluate_run, train_runs
from sparseshift.screens.prepare import prepare_screen
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.train import TrainConfig
from sparseshift.transfer import TransferConfig, transfer_runs

PERTURBATIONS = ["a", "b", "c", "d"]
COMBINATIONS = {"a+b": ["a", "b"], "b+c+d": ["b", "c", "d"], "a+d": ["a", "d"]}


def combo_config(method: str, combinations=COMBINATIONS, **kw) -> ModelConfig:
    return ModelConfig(method=method, n_genes=10, n_latent=5, n_perturbations=4, perturbations=PERTURBATIONS,
                       combinations=combinations, hyperparameters={"alpha": 5.0} if method == "svae_plus" else {},
                       **kw)


def randomised(cfg: ModelConfig, seed: int) -> SparseShiftVAE:
    """A model whose shifts and mask logits are random (about half the mask entries 0)."""
    torch.manual_seed(seed)
    model = SparseShiftVAE(cfg)
    with torch.no_grad():
        model.prior.mu.normal_()
        if hasattr(model.prior, "logits"):
            model.prior.logits.normal_()
    return model.eval()


@pytest.mark.parametrize("method", ["ivae", "svae", "svae_plus"])
def test_a_combination_prior_mean_is_the_sum_of_its_members_shifts(method):
    cfg = combo_config(method)
    assert cfg.n_conditions == 7
    model = randomised(cfg, 0)
    prior = model.prior
    singles = prior.shift(torch.arange(4))
    expected = prior.learned_shifts()  # mu * (logits > 0) for the masked methods, mu for iVAE
    torch.testing.assert_close(singles, expected)
    if method != "ivae":
        assert 0 < float((expected == 0).float().mean()) < 1  # the masks matter
    labels = torch.tensor([4, 5, 6, 4, 0])
    sums = torch.stack([expected[[0, 1]].sum(0), expected[[1, 2, 3]].sum(0), expected[[0, 3]].sum(0),
                        expected[[0, 1]].sum(0), expected[0]])
    torch.testing.assert_close(prior.shift(labels), sums)
    # the same through the stacked path (vmap over models, each with its own shifts and its
    # own combinations of the same shape)
    other = dict(zip(COMBINATIONS, [["c", "d"], ["a", "b", "c"], ["b", "d"]]))
    models = [model, randomised(cfg, 1), randomised(combo_config(method, combinations=other), 2)]
    stack = ModelStack(models).train(False)
    out = stack("prior.shift", torch.stack([labels] * 3), randomness="same")
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m.prior.shift(labels))
    assert not torch.equal(out[0], out[1])
    # and in a stack of several methods (sparseshift.batched.MixedPrior)
    others = [randomised(combo_config(m), 3) for m in ("ivae", "svae", "svae_plus") if m != method]
    models = [model, *others, SparseShiftVAE(combo_config("vae")).eval()]
    stack = ModelStack(models).train(False)
    out = stack("prior.shift", torch.stack([labels] * 4), randomness="same")
    for i, m in enumerate(models[:3]):
        torch.testing.assert_close(out[i], m.prior.shift(labels))
    assert torch.all(out[3] == 0)  # the VAE's prior is centred


def test_each_member_draws_its_own_mask_in_training():
    """In training the masked methods draw one Gumbel mask per member: a combination of a
    perturbation with itself-like members (same logits 0) is not always twice one draw."""
    cfg = combo_config("svae")
    torch.manual_seed(0)
    model = SparseShiftVAE(cfg).train()
    with torch.no_grad():
        model.prior.mu.fill_(1.0)
        model.prior.logits.zero_()  # each entry is on with probability 1/2
    torch.manual_seed(1)
    shift = model.prior.shift(torch.full((2000,), 4))  # a+b: each latent 0, 1 or 2
    values = set(shift.unique().tolist())
    assert values == {0.0, 1.0, 2.0}
    assert abs(float((shift == 1.0).float().mean()) - 0.5) < 0.05  # independent draws


def test_model_json_round_trip_and_an_old_one_loads(tmp_path):
    model = randomised(combo_config("svae_plus"), 0)
    model.save(tmp_path / "m.pt", tmp_path / "m.json")
    assert "prior.members" not in model.state_dict()  # rebuilt from the config, not saved
    loaded = SparseShiftVAE.load(tmp_path / "m.pt", tmp_path / "m.json").eval()
    assert loaded.cfg.combinations == COMBINATIONS
    labels = torch.arange(7)
    torch.testing.assert_close(loaded.prior.shift(labels), model.prior.shift(labels))
    # a model.json written before combinations existed
    old = ModelConfig(method="svae", n_genes=10, n_latent=5, n_perturbations=4).to_dict()
    del old["combinations"]
    cfg = ModelConfig.from_dict(json.loads(json.dumps(old)))
    assert cfg.combinations == {} and cfg.n_conditions == 4
    plain = SparseShiftVAE(cfg)
    assert not plain.prior.combined and not hasattr(plain.prior, "members")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig(method="svae", n_genes=10, n_latent=5, n_perturbations=2, perturbations=["a", "b"],
                    combinations={"a+z": ["a", "z"]})


# ----------------------------------------------------------------------------- simulations


def digest(adata) -> str:
    h = hashlib.sha256()
    for arr in (adata.X, adata.obsm["z_true"], adata.uns["targets"], adata.uns["shifts"],
                adata.obs["perturbation_index"].to_numpy(), adata.obs["split"].astype(str).to_numpy().astype("U"),
                adata.obs["perturbation"].astype(str).to_numpy().astype("U"), np.asarray(adata.obs_names).astype("U")):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(adata.uns["simulation"], sort_keys=True).encode())
    h.update(json.dumps({k: list(v) for k, v in adata.uns["gene_sets"].items()}, sort_keys=True).encode())
    h.update(json.dumps(list(adata.uns["perturbations"])).encode())
    return h.hexdigest()


SMALL = dict(n_latent=6, n_perturbations=12, n_heldout=3, cells_per_perturbation=20, n_genes=30, decoder_hidden=16,
             seed=3)


@pytest.mark.parametrize("extra, expected", [
    ({}, "6a22d48e558e17601598fbccaa7444d3404ff75b8f60e4bfa30f1caedbdaed0b"),
    ({"softmax_over": "cells", "library_size": 1e5}, "babe765444d4a937748d0e3d815cba0880d73551ca8e8f8d1c899e5236dc627d"),
])
def test_a_simulation_without_combinations_is_unchanged(extra, expected):
    """The hashes of the data simulated before combinations existed (commit 96a3481)."""
    adata = simulate(SimulationConfig(**SMALL, **extra))
    assert "combinations" not in adata.uns and "combinations" not in adata.uns["simulation"]
    assert digest(adata) == expected


@pytest.mark.parametrize("softmax_over", ["genes", "cells"])
def test_a_simulation_with_combinations(softmax_over):
    plain = simulate(SimulationConfig(**SMALL, softmax_over=softmax_over))
    cfg = SimulationConfig(**SMALL, softmax_over=softmax_over, combinations={"count": 5, "size": 2, "heldout": 2})
    adata = simulate(cfg)
    n_single = 12 * 20
    assert adata.n_obs == cfg.n_cells == n_single + 5 * 20
    # the single perturbations' cells are those of the setting without combinations
    np.testing.assert_array_equal(adata.X[:n_single], plain.X)
    np.testing.assert_array_equal(adata.obsm["z_true"][:n_single], plain.obsm["z_true"])
    assert adata.uns["targets"].shape == (12, 6)  # the truth stays per single perturbation
    combos = {k: list(v) for k, v in adata.uns["combinations"].items()}
    assert len(combos) == 5 and len({tuple(v) for v in combos.values()}) == 5
    names = list(adata.uns["perturbations"])
    for i, (label, members) in enumerate(combos.items()):
        idx = [names.index(m) for m in members]
        assert len(set(idx)) == 2 and max(idx) < cfg.n_train  # distinct training perturbations
        cells = (adata.obs["perturbation"].astype(str) == label).to_numpy()
        assert cells.sum() == 20 and (adata.obs["perturbation_index"][cells] == 12 + i).all()
        assert set(adata.obs["split"][cells]) == {"heldout" if i >= 3 else "train"}
        z_mean = adata.obsm["z_true"][cells].mean(0)
        assert np.abs(z_mean - adata.uns["shifts"][idx].sum(0)).max() < 1.0  # N(sum of shifts, I), 20 cells
    assert np.isfinite(adata.X).all() and adata.X[n_single:].sum() > 0
    with pytest.raises(ValueError, match="combinations.heldout"):
        SimulationConfig(**SMALL, combinations={"count": 2, "heldout": 3})
    with pytest.raises(ValueError, match="combinations: unknown"):
        SimulationConfig(**SMALL, combinations={"n": 2})


# ----------------------------------------------------------------------------- training


def combo_dataset(seed: int = 0):
    return simulate(SimulationConfig(n_latent=3, n_perturbations=6, n_heldout=1, cells_per_perturbation=40,
                                     n_genes=20, decoder_hidden=16, targets_per_perturbation=(1, 2),
                                     combinations={"count": 4, "size": 2, "heldout": 1}, seed=seed))


def test_a_combination_dataset_as_the_model_sees_it():
    adata = combo_dataset()
    perts, combos = dataset_perturbations(adata)
    labels, names = perturbation_labels(adata)
    assert perts == list(adata.uns["perturbations"]) and names == perts + list(combos)
    assert labels.max() == 6 + 4 - 1
    data = RunData(adata, 0.1, 0, torch.device("cpu"))
    # held out: the single perturbation no training cell carries, not the held-out combination's members
    assert data.heldout_perturbations.tolist() == [5]
    np.testing.assert_array_equal(trained_perturbations(adata), np.arange(5))
    # zero-shot: the cells of the held-out combination (its members trained), not those of pert_005
    last = list(adata.uns["combinations"])[-1]
    np.testing.assert_array_equal(data.zero_shot_cells,
                                  np.flatnonzero((adata.obs["perturbation"].astype(str) == last).to_numpy()))
    cfg = run_model_config(adata, "<dataset>", {"method": "svae", "n_latent": 3, "n_hidden": 16})
    assert cfg.n_perturbations == 6 and cfg.combinations == combos and cfg.n_conditions == 10


def elbos(results) -> np.ndarray:
    return np.array([info["elbo_val"] for *_, info in results])


def test_a_combination_dataset_trains_alone_and_stacked_alike():
    """Three seeds trained one by one and as one stack: every ELBO finite, and the two means
    within the seeds' spread (the stack draws other random numbers)."""
    adata = combo_dataset()
    settings = {"method": "svae_plus", "n_latent": 3, "n_hidden": 16, "hyperparameters": {"alpha": 10.0}}
    model_cfg = run_model_config(adata, "<dataset>", settings)
    train_cfgs = [TrainConfig(epochs=25, batch_size=64, warmup_epochs=10, seed=s) for s in range(3)]
    alone = [train_runs([adata], [model_cfg], [c], device="cpu", stacked=False)[0] for c in train_cfgs]
    stacked = train_runs([adata] * 3, [model_cfg] * 3, train_cfgs, device="cpu", stacked=True)
    a, b = elbos(alone), elbos(stacked)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    spread = max(a.std(ddof=1), b.std(ddof=1), 0.1)
    assert abs(a.mean() - b.mean()) < 4 * spread, (a, b)
    # an untrained model is far worse: the comparison can fail
    untrained = RunData(adata, 0.1, 0, torch.device("cpu"))
    torch.manual_seed(0)
    fresh = SparseShiftVAE(model_cfg)
    fresh.standardize_inputs(untrained.x[untrained.train_cells])
    assert float(fresh.elbo(*untrained.cells(untrained.val_cells))) < a.mean() - 4 * spread
    # the metrics: the target graph over the 6 single perturbations
    model, _, latents, _ = alone[0]
    assert model.prior.target_graph().shape == (6, 3)
    metrics = evaluate_run(adata, model, latents)
    assert np.isfinite(metrics["graph_f1"]) and np.isfinite(metrics["mcc_pearson"])
    assert 0 <= metrics["graph_f1_zero_shot"] <= 1


def test_the_transfer_of_a_combination_dataset():
    adata = combo_dataset()
    model_cfg = run_model_config(adata, "<dataset>", {"method": "svae", "n_latent": 3, "n_hidden": 16})
    train_cfg = TrainConfig(epochs=3, batch_size=64, warmup_epochs=1, seed=0)
    (model, *_), = train_runs([adata], [model_cfg], [train_cfg], device="cpu", stacked=False)
    trained = copy.deepcopy(model)
    data = RunData(adata, train_cfg.val_fraction, 0, torch.device("cpu"))
    cfg = TransferConfig(retrain_epochs=2, finetune_epochs=2, particles=4)
    result, = transfer_runs([model], [data], [train_cfg], cfg, stacked=False)
    summary = result.summary
    assert summary["n_heldout_perturbations"] == 1 and np.isfinite(summary["inll"])
    last = list(adata.uns["combinations"])[-1]
    table = result.per_perturbation.set_index("perturbation")
    assert set(table.index) == {"pert_005", last}
    # point 2: the held-out combination of trained perturbations scored zero-shot, with step 1's
    # model (the summed learned shifts, nothing fitted), beside its I-NLL after step 3
    assert summary["n_zero_shot_combinations"] == 1 and summary["n_zero_shot_cells"] == 40
    generator = torch.Generator().manual_seed(0)
    expected = -float(trained.iwelbo(*data.cells(data.zero_shot_cells), 4, generator).mean())
    assert summary["inll_zero_shot"] == pytest.approx(expected, rel=1e-6)
    assert summary["inll_zero_shot"] != summary["inll_combinations"]  # step 2 retrained the model
    assert summary["inll_combinations"] == pytest.approx(table.loc[last, "inll"], rel=1e-6)
    assert table.loc[last, "inll_zero_shot"] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(table.loc["pert_005", "inll_zero_shot"])


# ----------------------------------------------------------------------------- screens


def test_a_screen_with_combinations_has_their_members_as_perturbations(tmp_path):
    adata = screen_adata(n_perturbations=5, combinations=[(1, 0), (2, 4)], separator="_")
    adata = adata[adata.obs["perturbation"].astype(str) != "P04"].copy()  # P04 only inside P02_P04
    adata.write_h5ad(tmp_path / "screen.h5ad")
    prepare_screen(tmp_path / "screen.h5ad", screen_settings(combination_separator="_", heldout=["P03"]),
                   tmp_path / "out.h5ad")
    out = anndata.read_h5ad(tmp_path / "out.h5ad")
    perts, combos = dataset_perturbations(out)
    assert list(out.uns["perturbations"]) == perts == ["P00", "P01", "P02", "P04", "control", "P03"]
    assert combos == {"P00_P01": ["P00", "P01"], "P02_P04": ["P02", "P04"]}
    labels, names = perturbation_labels(out)
    assert names[-2:] == ["P00_P01", "P02_P04"]
    data = RunData(out, 0.1, 0, torch.device("cpu"))
    assert [perts[i] for i in data.heldout_perturbations] == ["P03"]


def test_the_zero_shot_targets_of_a_combination_are_the_union_of_its_members():
    """A model whose learned graph is the truth (latents the true ones) predicts the held-out
    combination's targets exactly; one wrong member row lowers the zero-shot F1 only."""
    adata = simulate(SimulationConfig(n_latent=6, n_perturbations=6, n_heldout=1, cells_per_perturbation=30,
                                      n_genes=20, decoder_hidden=16, targets_per_perturbation=(1, 1),
                                      combinations={"count": 3, "size": 2, "heldout": 1}))
    cfg = run_model_config(adata, "<dataset>", {"method": "svae", "n_latent": 6, "n_hidden": 16})
    model = SparseShiftVAE(cfg)
    truth = torch.as_tensor(np.asarray(adata.uns["targets"]), dtype=torch.float32)
    with torch.no_grad():
        model.prior.logits.copy_(20 * truth - 10)
    latents = np.asarray(adata.obsm["z_true"])
    metrics = evaluate_run(adata, model, latents)
    assert metrics["graph_f1_zero_shot"] == 1.0 and metrics["graph_f1"] == 1.0
    last = list(adata.uns["combinations"].values())[-1]
    member = list(adata.uns["perturbations"]).index(last[0])
    with torch.no_grad():
        model.prior.logits[member] = 10.0  # this member now targets every latent
    worse = evaluate_run(adata, model, latents)
    assert worse["graph_f1_zero_shot"] < 1.0 and worse["graph_precision_zero_shot"] < 1.0
    assert worse["graph_recall_zero_shot"] == 1.0


def test_the_stacked_transfer_scores_combinations_zero_shot_too():
    """The seeds of a simulation (each its own combinations) trained and transferred as one stack."""
    adatas = [combo_dataset(seed) for seed in range(2)]
    assert adatas[0].uns["combinations"].keys() != adatas[1].uns["combinations"].keys()
    model_cfgs = [run_model_config(a, "<dataset>", {"method": "svae", "n_latent": 3, "n_hidden": 16})
                  for a in adatas]
    cfgs = [TrainConfig(epochs=2, batch_size=64, warmup_epochs=1, seed=s) for s in range(2)]
    trained = train_runs(adatas, model_cfgs, cfgs, device="cpu", stacked=True)
    models = [m for m, *_ in trained]
    assert [m.cfg.combinations for m in models] == [c.combinations for c in model_cfgs]
    copies = [copy.deepcopy(m) for m in models]
    datas = [RunData(a, c.val_fraction, c.seed, torch.device("cpu")) for a, c in zip(adatas, cfgs)]
    transfer_cfg = TransferConfig(retrain_epochs=2, finetune_epochs=2, particles=3)
    results = transfer_runs(models, datas, cfgs, transfer_cfg, stacked=True)
    for result, model, data, cfg in zip(results, copies, datas, cfgs):
        generator = torch.Generator().manual_seed(cfg.seed)  # each run's own IWELBO draws
        expected = -float(model.iwelbo(*data.cells(data.zero_shot_cells), 3, generator).mean())
        assert result.summary["inll_zero_shot"] == pytest.approx(expected, rel=1e-6)
        assert np.isfinite(result.summary["inll_combinations"])
