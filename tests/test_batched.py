"""Several models trained as one batched model (sparseshift.batched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sparseshift.batched import ModelStack, fit_many
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.data import RunData
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.train import TrainConfig, TrainingDiverged


def models(n: int, method: str = "svae_plus", **kw) -> list[SparseShiftVAE]:
    cfg = ModelConfig(method=method, n_genes=12, n_latent=3, n_perturbations=5, hyperparameters={"alpha": 5.0}, **kw)
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(SparseShiftVAE(cfg))
    return out


def assert_stack_matches_models(ms: list[SparseShiftVAE]) -> list[float]:
    """With one shared random draw, the stack's loss, ELBOs, penalty and gradients of model i
    are those of model i alone; returns the models' own losses."""
    stack = ModelStack(ms)
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((len(ms), 16, 12), 20.0), generator=gen)
    labels = torch.randint(0, 5, (len(ms), 16), generator=gen)
    torch.manual_seed(7)
    loss, parts = stack("loss", x, labels, randomness="same", kl_weight=0.5, n_obs=100)
    loss.sum().backward()
    losses = []
    for i, model in enumerate(ms):
        torch.manual_seed(7)
        own, own_parts = model.loss(x[i], labels[i], kl_weight=0.5, n_obs=100)
        own.backward()
        torch.testing.assert_close(loss[i], own)
        torch.testing.assert_close(parts["elbo_cells"][i], own_parts["elbo_cells"])
        torch.testing.assert_close(parts["penalty"][i], own_parts["penalty"])
        for name, param in model.named_parameters():
            torch.testing.assert_close(stack.params[f"model.{name}"].grad[i], param.grad, msg=name)
        losses.append(float(own.detach()))
    return losses


@pytest.mark.parametrize("method", ["vae", "ivae", "svae", "svae_plus"])
def test_each_model_of_a_stack_gets_its_own_loss_and_gradient(method):
    """Batching neither mixes the models nor changes the objective."""
    assert_stack_matches_models(models(3, method))


@pytest.mark.parametrize("method, setting", [("beta_vae", "beta"), ("svae", "lambda"), ("svae_plus", "alpha")])
def test_a_stack_of_mixed_settings_gives_each_model_its_own_loss_and_gradient(method, setting):
    """A grid in one stack: three models of one method with different swept weights (and
    same initial weights); model i's loss and gradients in the stack are those of model i alone."""
    ms = []
    for value in [2.0, 10.0, 100.0]:
        torch.manual_seed(0)
        cfg = ModelConfig(method=method, n_genes=12, n_latent=3, n_perturbations=5, hyperparameters={setting: value})
        ms.append(SparseShiftVAE(cfg))
    losses = assert_stack_matches_models(ms)
    # same weights, same draws: the losses differ by the setting alone, so a stack that gave
    # every model model 0's value would fail the comparisons above
    assert len(set(losses)) == 3
    with pytest.raises(ValueError, match="another configuration"):
        ModelStack([ms[0], SparseShiftVAE(ModelConfig(method=method, n_genes=12, n_latent=4, n_perturbations=5))])


def tiny_data(seed: int):
    adata = simulate(SimulationConfig(n_latent=3, n_perturbations=8, n_heldout=2, cells_per_perturbation=30,
                                      n_genes=12, targets_per_perturbation=(1, 2), seed=seed))
    return RunData(adata, 0.1, seed, torch.device("cpu"))


def train_two(epochs: int = 6, checkpoint=None, n: int = 2, patience=None, alphas=(5.0,)):
    """``n`` sVAE+ models on datasets 0 and 1 (alternately), one alpha each from ``alphas``."""
    data = [tiny_data(0), tiny_data(1)]
    ms, members = [], [data[i % 2] for i in range(n)]
    for seed, d in enumerate(members):
        torch.manual_seed(seed)
        cfg = ModelConfig(method="svae_plus", n_genes=12, n_latent=3, n_perturbations=8,
                          hyperparameters={"alpha": alphas[seed % len(alphas)]})
        m = SparseShiftVAE(cfg)
        m.standardize_inputs(d.x[d.train_cells])
        ms.append(m)
    before = [float(m.elbo(*d.cells(d.val_cells))) for m, d in zip(ms, members)]
    histories = fit_many(
        ms, [d.x for d in members], [d.labels for d in members], [d.train_cells for d in members],
        [d.val_cells for d in members],
        TrainConfig(epochs=epochs, batch_size=32, warmup_epochs=2, lr=5e-3, checkpoint_every=2, patience=patience),
        seeds=list(range(n)), checkpoint=checkpoint,
    )
    return ms, members, before, histories


def test_fit_many_trains_every_model_and_writes_it_back():
    ms, data, before, histories = train_two()
    for m, d, b, h in zip(ms, data, before, histories):
        assert len(h) == 6 and h["epoch"].tolist() == list(range(1, 7))
        after = float(m.elbo(*d.cells(d.val_cells)))
        assert after > b + 1.0  # the model itself (not only the stack) was trained
        assert h["elbo_val"].iloc[-1] == pytest.approx(after, abs=1.0)  # one posterior draw each
        assert 0.0 <= h["mask_density"].iloc[-1] <= 1.0
        assert not m.training
    # two datasets, two initialisations: two different models
    assert not torch.equal(ms[0].decoder[0].weight, ms[1].decoder[0].weight)


def test_fit_many_same_seeds_same_numbers():
    a, _, _, ha = train_two(epochs=3)
    b, _, _, hb = train_two(epochs=3)
    for ma, mb in zip(a, b):
        for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
            assert torch.equal(pa, pb), name
    assert ha[1]["loss"].tolist() == hb[1]["loss"].tolist()


def test_fit_many_resumes_from_its_checkpoint(tmp_path):
    """A stacked job killed after epoch 2 and rerun continues where it stopped, with the
    numbers of an uninterrupted run."""
    ckpt = tmp_path / "stack.pt"
    train_two(epochs=3, checkpoint=ckpt)  # saves at epoch 2; stands for a job killed in epoch 3
    assert ckpt.exists()
    resumed, _, _, h_resumed = train_two(epochs=4, checkpoint=ckpt)
    straight, _, _, h_straight = train_two(epochs=4)
    for a, b in zip(resumed, straight):
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), name
    assert h_resumed[0]["loss"].tolist() == h_straight[0]["loss"].tolist()


def test_fit_many_names_the_model_that_diverges():
    """Model 1's data holds an infinite count: its loss is not finite from the first epoch,
    model 0's is; the error names model 1."""
    data = [tiny_data(0), tiny_data(1)]
    data[1].x[data[1].train_cells[0], 0] = float("inf")
    cfg = ModelConfig(method="svae_plus", n_genes=12, n_latent=3, n_perturbations=8, hyperparameters={"alpha": 5.0})
    ms = [SparseShiftVAE(cfg), SparseShiftVAE(cfg)]
    with pytest.raises(TrainingDiverged, match=r"\(model 1 of its stack\).*training loss became non-finite in epoch 1"):
        fit_many(ms, [d.x for d in data], [d.labels for d in data], [d.train_cells for d in data],
                 [d.val_cells for d in data], TrainConfig(epochs=2, batch_size=32), seeds=[0, 1])


WEIGHTS = {"vae": {}, "beta_vae": {"beta": 4.0}, "ivae": {}, "svae": {"lambda": 3.0}, "svae_plus": {"alpha": 5.0}}


def every_method(**kw) -> list[SparseShiftVAE]:
    """One model of each method, of one size, random shifts and mask logits (about half the
    mask entries 0) so that every part of each prior matters."""
    out = []
    for seed, (method, weight) in enumerate(WEIGHTS.items()):
        torch.manual_seed(seed)
        model = SparseShiftVAE(ModelConfig(method=method, n_genes=12, n_latent=3, n_perturbations=5,
                                           hyperparameters=weight, **kw))
        with torch.no_grad():
            for name in ("mu", "logits"):
                if hasattr(model.prior, name):
                    getattr(model.prior, name).normal_()
        out.append(model)
    return out


def test_a_stack_of_every_method_gives_each_model_its_own_loss_and_gradient():
    """Methods mixed in one stack (MixedPrior): model i's loss, penalty and gradients are
    those of model i alone, and the parameters its method lacks get no gradient."""
    ms = every_method()
    losses = assert_stack_matches_models(ms)
    assert len(set(losses)) == 5
    stack = ModelStack(ms)
    torch.manual_seed(0)
    x = torch.poisson(torch.full((5, 16, 12), 20.0))
    loss, parts = stack("loss", x, torch.randint(0, 5, (5, 16)), kl_weight=1.0, n_obs=100)
    loss.sum().backward()
    mu, logits = stack.params["model.prior.mu"].grad, stack.params["model.prior.logits"].grad
    assert torch.all(mu[0:2] == 0) and torch.all(logits[0:3] == 0)  # VAE, beta-VAE; iVAE's logits
    assert torch.all(mu[2:].flatten(1).abs().sum(1) > 0) and torch.all(logits[3:].flatten(1).abs().sum(1) > 0)
    assert parts["penalty"][:3].tolist() == [0.0, 0.0, 0.0] and bool(torch.all(parts["penalty"][3:] != 0))
    densities = [stack.member(i, "prior.mask_density") for i in range(5)]
    assert all(np.isnan(densities[:3])) and densities[3:] == [m.prior.mask_density() for m in ms[3:]]


def test_a_stack_of_every_method_trains_and_writes_back_each_model():
    """fit_many on a mixed stack: every model trains, keeps its own prior class and gets its
    own parameters back; the unused ones never leave the stack."""
    d = tiny_data(0)
    ms = []
    for method, weight in WEIGHTS.items():
        torch.manual_seed(0)
        ms.append(SparseShiftVAE(ModelConfig(method=method, n_genes=12, n_latent=3, n_perturbations=8,
                                             hyperparameters=weight)))
    before = [float(m.elbo(*d.cells(d.val_cells))) for m in ms]
    histories = fit_many(ms, [d.x] * 5, [d.labels] * 5, [d.train_cells] * 5, [d.val_cells] * 5,
                         TrainConfig(epochs=4, batch_size=32, warmup_epochs=2, lr=5e-3), seeds=list(range(5)))
    for m, b, h, prior in zip(ms, before, histories, ["StandardPrior", "BetaKLPrior", "ShiftPrior",
                                                         "L1MaskPrior", "BetaMaskPrior"]):
        assert type(m.prior).__name__ == prior and len(h) == 4
        assert float(m.elbo(*d.cells(d.val_cells))) > b + 1.0
        assert np.isnan(h["mask_density"]).all() == (prior in ("StandardPrior", "BetaKLPrior", "ShiftPrior"))


def test_stack_refuses_models_of_different_configurations():
    with pytest.raises(ValueError, match="model 1 has another configuration"):
        ModelStack([models(1)[0], models(1, "ivae", n_hidden=16)[0]])
    mixed = every_method()
    mixed[4].binarize_targets(torch.tensor([4]))
    mixed[3].binarize_targets(torch.tensor([4]))
    with pytest.raises(ValueError, match="frozen target mask"):
        ModelStack(mixed[3:])
    frozen, free = models(2)
    frozen.binarize_targets(torch.tensor([4]))
    with pytest.raises(ValueError, match="frozen target mask"):
        ModelStack([frozen, free])


def test_fit_many_stops_each_model_early_with_its_best_weights():
    """Early stopping per model: a model leaves the stack `patience` epochs after its best
    validation ELBO, with the weights of that epoch, and the others train on. Until the
    first model leaves, the stack is the one trained without early stopping, so the first
    model to stop must hold that run's weights at its best epoch."""
    patience, epochs = 2, 14
    ms, _, _, hs = train_two(epochs=epochs, n=4, patience=patience, alphas=(2.0, 20.0))
    lengths = [len(h) for h in hs]
    first = int(np.argmin(lengths))
    assert lengths[first] < epochs and max(lengths) > lengths[first]  # one stopped, another went on
    h = hs[first]
    best_epoch = int(h.loc[h["epoch"] >= 2, "elbo_val"].idxmax()) + 1
    assert lengths[first] - best_epoch == patience
    plain, _, _, _ = train_two(epochs=best_epoch, n=4, alphas=(2.0, 20.0))
    for (name, got), want in zip(ms[first].named_parameters(), plain[first].parameters()):
        assert torch.equal(got, want), name
    for i, hist in enumerate(hs):  # every model ends with its best weights, not its last
        if len(hist) < epochs:
            assert len(hist) - (int(hist.loc[hist["epoch"] >= 2, "elbo_val"].idxmax()) + 1) == patience


def test_fit_many_resumes_with_models_that_stopped(tmp_path):
    """A checkpoint taken after a model left the stack resumes with it stopped, and ends as
    the uninterrupted run does."""
    ckpt = tmp_path / "stack.pt"
    _, _, _, straight_h = train_two(epochs=14, n=4, patience=2, alphas=(2.0, 20.0))
    stop = min(len(h) for h in straight_h)
    cut = stop + (2 - stop % 2) + 1  # killed in the epoch after the first checkpoint past the stop
    train_two(epochs=cut, checkpoint=ckpt, n=4, patience=2, alphas=(2.0, 20.0))
    assert len(torch.load(ckpt, weights_only=False)["stopped"]) >= 1
    resumed, _, _, resumed_h = train_two(epochs=14, checkpoint=ckpt, n=4, patience=2, alphas=(2.0, 20.0))
    straight, _, _, _ = train_two(epochs=14, n=4, patience=2, alphas=(2.0, 20.0))
    for a, b in zip(resumed, straight):
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), name
    assert [h["loss"].tolist() for h in resumed_h] == [h["loss"].tolist() for h in straight_h]


def test_fit_many_trains_only_what_it_is_told():
    """``trainable``: only the named parameter moves, and only where its gradient multiplier
    is not 0 (step 3 of the transfer: the held-out perturbations' shifts)."""
    data = [tiny_data(0), tiny_data(1)]
    ms = []
    for seed in range(2):
        torch.manual_seed(seed)
        ms.append(SparseShiftVAE(ModelConfig(method="svae_plus", n_genes=12, n_latent=3, n_perturbations=8)))
    before = [{k: v.detach().clone() for k, v in m.named_parameters()} for m in ms]
    rows = torch.zeros(8, 1)
    rows[[6, 7]] = 1.0
    fit_many(ms, [d.x for d in data], [d.labels for d in data], [d.heldout_cells for d in data],
             [np.array([], dtype=np.int64)] * 2, TrainConfig(epochs=3, batch_size=16, lr=0.05, warmup_epochs=0),
             trainable={"prior.mu": rows})
    for m, b in zip(ms, before):
        for name, param in m.named_parameters():
            if name != "prior.mu":
                assert torch.equal(param, b[name]), name
        assert torch.equal(m.prior.mu[:6], b["prior.mu"][:6])
        assert not torch.equal(m.prior.mu[6:], b["prior.mu"][6:])


def test_fit_many_refuses_mismatched_data():
    ms = models(2)
    x = [torch.ones(20, 12), torch.ones(20, 12)]
    lab = [torch.zeros(20, dtype=torch.long)] * 2
    idx = [np.arange(15)] * 2
    val = [np.arange(15, 20)] * 2
    with pytest.raises(ValueError, match="same shape"):
        fit_many(ms, [x[0], torch.ones(30, 12)], lab, idx, val, TrainConfig(epochs=1))


def test_benchmark_prints_one_row_per_method_batch_and_stack():
    benchmark = Path(__file__).resolve().parents[1] / "benchmarks" / "train.py"
    out = subprocess.run([sys.executable, str(benchmark), "--epochs", "2", "--methods", "vae", "svae_plus",
                          "--models", "1", "2", "--batch-size", "2048"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("# ") and "1 thread(s)" in lines[0]
    table = [line.split("\t") for line in lines[1:]]
    header, rows = table[0], table[1:]
    assert [(r[0], r[2]) for r in rows] == [("vae", "1"), ("svae_plus", "1"), ("vae", "2"), ("svae_plus", "2")]
    col = {name: i for i, name in enumerate(header)}
    for r in rows:
        per_model = float(r[col["s_per_model_epoch"]])
        assert per_model > 0 and float(r[col["s_per_epoch"]]) == pytest.approx(per_model * int(r[2]), rel=1e-3)
        assert float(r[col["speedup_vs_reference"]]) == pytest.approx(1.15 / per_model, rel=1e-2)
    mixed = subprocess.run([sys.executable, str(benchmark), "--epochs", "2", "--methods", "vae", "svae_plus",
                            "--models", "2", "--batch-size", "2048", "--mixed"],
                           capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[:3] for line in mixed.strip().splitlines()[2:]] == [["mixed", "2048", "2"]]


def test_batch_norm_models_are_not_stacked():
    """Their running statistics would stay at 0 / 1 in a stack: refused, not trained wrong."""
    cfg = ModelConfig(method="vae", n_genes=5, n_latent=2, n_perturbations=3, batch_norm=True)
    with pytest.raises(ValueError, match="batch_norm"):
        ModelStack([SparseShiftVAE(cfg), SparseShiftVAE(cfg)])


def test_a_stacked_grid_scores_like_its_runs_trained_alone():
    """Three runs (seeds, each on its own dataset, and two alphas) trained alone and as one
    stack: the stacked runs' Pearson MCC stays within the seed-to-seed spread of the
    one-model runs (the random draws differ, the model and the data do not)."""
    from sparseshift.runs import evaluate_run, train_runs

    adatas = [simulate(SimulationConfig(n_latent=3, n_perturbations=8, n_heldout=2, cells_per_perturbation=80,
                                        n_genes=20, decoder_hidden=8, library_size=1e4, seed=s)) for s in range(3)]
    cfgs = [ModelConfig(method="svae_plus", n_genes=20, n_latent=3, n_perturbations=8, hyperparameters={"alpha": a})
            for a in (8.0, 8.0, 20.0)]
    train = [TrainConfig(epochs=40, batch_size=64, warmup_epochs=10, seed=s) for s in range(3)]
    alone = [evaluate_run(a, *train_runs([a], [c], [t], "cpu", stacked=False)[0][::2])["mcc_pearson"]
             for a, c, t in zip(adatas, cfgs, train)]
    stacked = [evaluate_run(a, model, latents)["mcc_pearson"]
               for a, (model, _, latents, _) in zip(adatas, train_runs(adatas, cfgs, train, "cpu",
                                                                     stacked=True))]
    spread = max(alone) - min(alone)
    assert all(abs(s - a) <= max(spread, 0.05) for s, a in zip(stacked, alone)), (alone, stacked)
