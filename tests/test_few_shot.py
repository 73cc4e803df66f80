"""Few-shot transfer (issue 29, point 3): step 3 fitted on k cells per held-out condition,
scored on the others."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sparseshift import summary as summary_mod
from sparseshift import transfer as transfer_mod
from sparseshift.data import RunData
from sparseshift.heldout import HeldOut, few_shot_splits
from sparseshift.model import ModelConfig
from sparseshift.runs import train_runs
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.train import TrainConfig
from sparseshift.transfer import TransferConfig, transfer_runs

TRAIN = TrainConfig(epochs=4, batch_size=64, warmup_epochs=2, seed=0)
CFG = TransferConfig(retrain_epochs=2, retrain_patience=None, finetune_epochs=3, particles=30)


@pytest.fixture(scope="module")
def adata():
    # held out: pert_006 and pert_007, 60 cells each
    return simulate(SimulationConfig(n_latent=3, n_perturbations=8, n_heldout=2, cells_per_perturbation=60,
                                     n_genes=20, decoder_hidden=8, library_size=1e4, seed=0))


@pytest.fixture(scope="module")
def trained(adata):
    models = {}
    for method in ["vae", "ivae", "svae", "svae_plus"]:  # also tests/test_heldout_masks.py's
        cfg = ModelConfig(method=method, n_genes=20, n_latent=3, n_perturbations=8,
                          hyperparameters={"alpha": 8.0, "lambda": 1.0})
        models[method] = train_runs([adata], [cfg], [TRAIN], "cpu", stacked=False)[0][0]
    return lambda method: copy.deepcopy(models[method])


def run_data(adata, seed=0):
    return RunData(adata, TRAIN.val_fraction, seed, torch.device("cpu"))


def test_the_splits_never_score_a_fitted_cell_and_are_drawn_with_the_seed():
    labels = np.repeat([3, 5, 9], [10, 4, 7])
    cells = np.arange(100, 100 + len(labels))
    splits = few_shot_splits(cells, labels, seed=0, ks=[2, 5, 50])
    for k, (fitted, scored) in splits.items():
        assert not np.intersect1d(fitted, scored).size  # never a fitted cell scored
        np.testing.assert_array_equal(np.sort(np.concatenate([fitted, scored])), cells)  # every cell once
        for c, n in ((3, 10), (5, 4), (9, 7)):
            of_c = cells[labels == c]
            assert np.isin(fitted, of_c).sum() == min(k, n)  # k per condition, all of a small one
            assert np.isin(scored, of_c).sum() == max(n - k, 0)
    # nested: the 2 cells of a condition are among its 5
    assert np.isin(splits[2][0], splits[5][0]).all()
    # seeded: the same seed the same cells, another seed others
    again = few_shot_splits(cells, labels, seed=0, ks=[2, 5, 50])
    for k in splits:
        np.testing.assert_array_equal(splits[k][0], again[k][0])
    assert not np.array_equal(few_shot_splits(cells, labels, seed=1, ks=[5])[5][0], splits[5][0])


def test_the_config_refuses_bad_k():
    assert TransferConfig(few_shot=[20, 5]).few_shot == [5, 20]
    for bad in ([0], [5, 5], [-1]):
        with pytest.raises(ValueError, match="transfer.few_shot"):
            TransferConfig(few_shot=bad)


def few_shot_spy(monkeypatch):
    """Records the cells each step 3 (one-run) is fitted on."""
    calls = {"fitted": []}
    finetune = transfer_mod.finetune

    def spy_finetune(model, data, held_out, train_cfg, cfg, cells=None):
        calls["fitted"].append(data.heldout_cells if cells is None else cells)
        return finetune(model, data, held_out, train_cfg, cfg, cells)

    monkeypatch.setattr(transfer_mod, "finetune", spy_finetune)
    return calls


@pytest.mark.parametrize("method", ["vae", "svae", "svae_plus"])
def test_few_shot_results_per_k_and_the_full_protocol_unchanged(adata, trained, method, monkeypatch):
    data = run_data(adata)
    full = transfer_runs([trained(method)], [data], [TRAIN], CFG, stacked=False)[0]
    cfg = replace(CFG, few_shot=[5, 20, 60])
    scored_cells = []
    iwelbo = transfer_mod.SparseShiftVAE.iwelbo

    def spy(self, x, labels, *args, **kw):
        scored_cells.append(x.clone())
        return iwelbo(self, x, labels, *args, **kw)

    calls = few_shot_spy(monkeypatch)
    monkeypatch.setattr(transfer_mod.SparseShiftVAE, "iwelbo", spy)
    result = transfer_runs([trained(method)], [data], [TRAIN], cfg, stacked=False)[0]
    s = result.summary
    # the full protocol (the k = all row) gives today's numbers and models
    for key, value in full.summary.items():
        if not key.endswith("seconds"):
            assert s[key] == value or (math.isnan(value) and math.isnan(s[key])), key
    for a, b in zip(full.finetuned.state_dict().values(), result.finetuned.state_dict().values()):
        assert torch.equal(a, b)
    pd.testing.assert_frame_equal(full.per_perturbation, result.per_perturbation[full.per_perturbation.columns])
    # one result per k
    splits = few_shot_splits(data.heldout_cells, data.labels[data.heldout_cells].numpy(), TRAIN.seed, [5, 20, 60])
    for k, n_scored, n_unscored in ((5, 110, 0), (20, 80, 0), (60, 0, 2)):
        assert s[f"n_few_shot_cells_k{k}"] == n_scored and s[f"n_few_shot_fitted_k{k}"] == 120 - n_scored
        assert s[f"n_few_shot_unscored_k{k}"] == n_unscored
        column = result.per_perturbation[f"inll_few_shot_k{k}"]
        if n_scored:
            assert np.isfinite(s[f"inll_few_shot_k{k}"]) and np.isfinite(column).all()
            # the mean over the scored cells (both conditions have as many)
            assert column.mean() == pytest.approx(s[f"inll_few_shot_k{k}"], rel=1e-9)
        else:  # 60 cells per condition: all fitted, none scored
            assert math.isnan(s[f"inll_few_shot_k{k}"]) and column.isna().all()
    # step 3 of the few-shot runs fitted on the split's cells only, and their IWELBO scored the others
    few = calls["fitted"][1:]
    assert len(few) == 3
    for fitted, k in zip(few, [5, 20, 60]):
        np.testing.assert_array_equal(fitted, splits[k][0])
    few_shot_scores = scored_cells[-2:]  # k = 5 and 20 (k = 60 scores nothing)
    for x, k in zip(few_shot_scores, [5, 20]):
        np.testing.assert_array_equal(x.numpy(), data.x[splits[k][1]].numpy())
        fitted_x = data.x[splits[k][0]]
        # never a fitted cell among the scored ones
        assert not (x[:, None, :] == fitted_x[None, :, :]).all(-1).any()


def test_few_shot_fitting_beats_no_fitting_on_the_same_cells(adata, trained):
    data = run_data(adata)
    cfg = replace(CFG, finetune_epochs=60, finetune_lr=0.05, particles=50, few_shot=[30])
    one_batch = replace(TRAIN, batch_size=256)
    result, = transfer_runs([trained("svae_plus")], [data], [one_batch], cfg, stacked=False)
    s = result.summary
    assert s["few_shot_epochs_run_k30"] == 60
    _, scored = few_shot_splits(data.heldout_cells, data.labels[data.heldout_cells].numpy(), 0, [30])[30]
    # step 2's model (held-out shifts 0) on the same cells, the same particles
    unfitted = -float(result.retrained.iwelbo(*data.cells(scored), 50, torch.Generator().manual_seed(0)).mean())
    assert s["inll_few_shot_k30"] < unfitted


def test_the_draw_is_the_same_for_every_method(adata, trained, monkeypatch):
    calls = few_shot_spy(monkeypatch)
    data = run_data(adata)
    cfg = replace(CFG, few_shot=[7])
    for method in ["svae", "svae_plus"]:
        transfer_runs([trained(method)], [data], [TRAIN], cfg, stacked=False)[0]
    # full, k = 7 for svae; full, k = 7 for svae_plus
    np.testing.assert_array_equal(calls["fitted"][1], calls["fitted"][3])
    assert len(calls["fitted"][1]) == 14


def test_the_stacked_transfer_gives_the_same_keys_and_its_own_seeds_draws(adata, trained):
    cfg = replace(CFG, few_shot=[5, 60])
    cfgs = [replace(TRAIN, seed=s) for s in (0, 1)]
    datas = [run_data(adata, c.seed) for c in cfgs]
    stacked = transfer_runs([trained("svae_plus"), trained("svae_plus")], datas, cfgs, cfg, stacked=True)
    single = transfer_runs([trained("svae_plus")], [datas[0]], [TRAIN], cfg, stacked=False)[0]
    for result in stacked:
        assert set(result.summary) == set(single.summary)
        assert list(result.per_perturbation.columns) == list(single.per_perturbation.columns)
        assert np.isfinite(result.summary["inll_few_shot_k5"]) and result.summary["n_few_shot_cells_k5"] == 110
        assert math.isnan(result.summary["inll_few_shot_k60"])
    # seed 0's run in the stack has the one-run transfer's draw (same data, same seed): same cells
    held = [HeldOut(d, c.seed, cfg) for d, c in zip(datas, cfgs)]
    one = HeldOut(datas[0], 0, cfg)
    np.testing.assert_array_equal(held[0].splits[5][0], one.splits[5][0])
    assert not np.array_equal(held[0].splits[5][0], held[1].splits[5][0])  # another seed, another draw
    # and scores within the noise of the stack's other random numbers
    assert abs(stacked[0].summary["inll_few_shot_k5"] - single.summary["inll_few_shot_k5"]) < 5.0


def test_the_stacked_transfer_of_runs_with_unequal_fits_goes_run_by_run(adata, trained):
    """Two runs whose held-out conditions have different numbers of cells (as many in all) fit
    the few-shot step 3 one by one (a stack needs as many cells per run)."""
    cfg = replace(CFG, few_shot=[5])
    cfgs = [replace(TRAIN, seed=0), replace(TRAIN, seed=0)]
    datas = [run_data(adata), run_data(adata)]
    labels = datas[1].labels.clone()
    of_7 = datas[1].heldout_cells[(labels[datas[1].heldout_cells] == 7).numpy()]
    labels[of_7[3:]] = 6  # run 2: pert_007 keeps 3 held-out cells, pert_006 has 117
    datas[1].labels = labels
    results = transfer_runs([trained("svae"), trained("svae")], datas, cfgs, cfg, stacked=True)
    assert results[0].summary["n_few_shot_fitted_k5"] == 10 and results[1].summary["n_few_shot_fitted_k5"] == 8
    assert results[1].summary["n_few_shot_unscored_k5"] == 1 and results[1].summary["n_few_shot_cells_k5"] == 112
    assert np.isfinite(results[1].summary["inll_few_shot_k5"])
    table = results[1].per_perturbation.set_index("perturbation")
    assert math.isnan(table.loc["pert_007", "inll_few_shot_k5"])


def test_the_summary_gains_a_column_per_k_only_when_runs_have_them(tmp_path):
    import json

    base = {"simulation": "s", "method": "svae", "seed": 0, "run": "p3", "n_latent": 3, "inll": 1.0}
    paths = []
    for i, extra in enumerate([{}, {"inll_few_shot_k20": 2.0, "n_few_shot_cells_k20": 9,
                                    "inll_few_shot_k5": 3.0, "n_few_shot_cells_k5": 11,
                                    "n_few_shot_fitted_k5": 4}]):
        path = tmp_path / f"m{i}.json"
        path.write_text(json.dumps({**base, "seed": i, **extra}))
        paths.append(path)
    without = summary_mod.load_metrics(paths[:1])
    assert not [c for c in without.columns if "few_shot" in c]
    with_k = summary_mod.load_metrics(paths)
    assert [c for c in with_k.columns if "few_shot" in c] == [
        "inll_few_shot_k5", "n_few_shot_cells_k5", "inll_few_shot_k20", "n_few_shot_cells_k20"]
    assert list(with_k.columns[: len(without.columns)]) == list(without.columns)
    assert with_k["inll_few_shot_k5"].tolist()[1] == 3.0 and math.isnan(with_k["inll_few_shot_k5"][0])
