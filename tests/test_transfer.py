"""The transfer protocol to held-out perturbations and the importance-weighted ELBO."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.data import RunData
from sparseshift.runs import train_runs
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.train import TrainConfig, TrainingDiverged
from sparseshift.transfer import TransferConfig, finetune, transfer_runs
from torch.distributions import NegativeBinomial, Normal

SHIFT_METHODS = ["ivae", "svae", "svae_plus"]
TRAIN = TrainConfig(epochs=8, batch_size=64, warmup_epochs=3, seed=0)


@pytest.fixture(scope="module")
def adata():
    return simulate(
        SimulationConfig(
            n_latent=3, n_perturbations=8, n_heldout=2, cells_per_perturbation=60, n_genes=20,
            decoder_hidden=8, library_size=1e4, seed=0,
        )
    )


@pytest.fixture(scope="module")
def trained(adata):
    """A briefly trained model of every method (a fresh copy per use)."""
    models = {}
    for method in ["vae", *SHIFT_METHODS]:
        cfg = ModelConfig(method=method, n_genes=20, n_latent=3, n_perturbations=8, hyperparameters={"alpha": 8.0})
        models[method] = train_runs([adata], [cfg], [TRAIN], "cpu", stacked=False)[0][0]
    return lambda method: _copy(models[method])


def _copy(model):
    clone = SparseShiftVAE(model.cfg)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def run_data(adata):
    return RunData(adata, TRAIN.val_fraction, TRAIN.seed, torch.device("cpu"))


def heldout_cells(adata):
    data = run_data(adata)
    return data.cells(data.heldout_cells)


def test_log_likelihood_equals_the_negative_binomial_density():
    torch.manual_seed(0)
    model = SparseShiftVAE(ModelConfig(method="vae", n_genes=7, n_latent=3, n_perturbations=2)).double()
    with torch.no_grad():
        model.log_theta.copy_(torch.linspace(-2.0, 5.0, 7))
    x = torch.poisson(torch.rand(5, 7, dtype=torch.float64) * 300)
    z = torch.randn(11, 5, 3, dtype=torch.float64)  # particles x cells x latents
    px = model.likelihood(z, x.sum(-1, keepdim=True))
    expected = NegativeBinomial(total_count=px.total_count, logits=px.logits).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, z), expected, rtol=1e-10, atol=1e-8)


def test_iwelbo_matches_a_direct_computation_from_distributions(adata, trained):
    """log (1/T) sum_t p(x | z_t) p(z_t | a) / q(z_t | x) with the same draws, written
    directly with torch.distributions."""
    model = trained("svae_plus")
    x, labels = heldout_cells(adata)
    n_particles = 64
    ours = model.iwelbo(x, labels, n_particles, torch.Generator().manual_seed(5))
    eps = torch.randn((n_particles, *x.shape[:1], 3), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        qz = model.encode(x)
        z = qz.loc + qz.scale * eps
        pz = Normal(model.prior.shift(labels), 1.0)
        px = model.likelihood(z, x.sum(-1, keepdim=True))
        log_w = px.log_prob(x).sum(-1) + pz.log_prob(z).sum(-1) - qz.log_prob(z).sum(-1)
    expected = torch.logsumexp(log_w, 0) - math.log(n_particles)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-2)  # float32 sums of ~100 genes


def test_iwelbo_is_at_least_the_elbo(adata, trained):
    model = trained("svae_plus")
    x, labels = heldout_cells(adata)
    torch.manual_seed(1)
    elbo = torch.stack([model.elbo(x, labels) for _ in range(20)]).mean()
    iwelbo = model.iwelbo(x, labels, 200, torch.Generator().manual_seed(0)).mean()
    assert iwelbo > elbo + 0.05


def test_iwelbo_grows_with_the_number_of_particles(adata, trained):
    model = trained("ivae")
    x, labels = heldout_cells(adata)
    one = model.iwelbo(x, labels, 1, torch.Generator().manual_seed(0)).mean()
    many = model.iwelbo(x, labels, 1000, torch.Generator().manual_seed(0)).mean()
    assert many > one + 0.1
    # with one particle the IWELBO is a single-sample ELBO estimate (Monte-Carlo KL)
    torch.manual_seed(2)
    elbo = torch.stack([model.elbo(x, labels) for _ in range(20)]).mean()
    ones = torch.stack([model.iwelbo(x, labels, 1, torch.Generator().manual_seed(s)).mean() for s in range(20)])
    assert abs(float(ones.mean() - elbo)) < 4 * float(ones.std()) / math.sqrt(20) + 0.05


def test_iwelbo_blocks_bound_memory_without_changing_the_estimate(adata, trained):
    """A budget too small for one cell's particles splits the particles too."""
    model = trained("svae")
    x, labels = heldout_cells(adata)
    big = model.iwelbo(x, labels, 3000, torch.Generator().manual_seed(0), memory_mb=64)
    small = model.iwelbo(x, labels, 3000, torch.Generator().manual_seed(1), memory_mb=0.05)
    assert small.shape == big.shape == (x.shape[0],)
    torch.testing.assert_close(small.mean(), big.mean(), atol=0.05, rtol=0)
    # and the same generator seed gives the same numbers
    again = model.iwelbo(x, labels, 3000, torch.Generator().manual_seed(1), memory_mb=0.05)
    assert torch.equal(small, again)


def test_binarize_targets_fixes_the_graph_and_resets_held_out(trained):
    model = trained("svae_plus")
    with torch.no_grad():
        model.prior.logits.copy_(torch.tensor([[2.0, -2.0, 0.5]] * 8))
    mu_before = model.prior.mu.detach().clone()
    held_out = torch.tensor([6, 7])
    model.binarize_targets(held_out)
    prior = model.prior
    assert prior.target_graph()[:6].tolist() == [[1.0, 0.0, 1.0]] * 6
    assert prior.target_graph()[6:].tolist() == [[1.0, 1.0, 1.0]] * 2
    assert torch.equal(prior.mu[6:], torch.zeros(2, 3)) and torch.equal(prior.mu[:6], mu_before[:6])
    assert not prior.logits.requires_grad and prior.penalty(100, 1.0) == 0.0
    # in training mode too the mask is the fixed graph, not a Gumbel sample
    model.train()
    labels = torch.tensor([0, 6] * 50)
    assert torch.equal(prior.mask(labels), prior.fixed_mask[labels])


def test_binarize_targets_of_ivae_and_vae(trained):
    ivae = trained("ivae")
    mu = ivae.prior.mu.detach().clone()
    ivae.binarize_targets(torch.tensor([6, 7]))
    assert torch.equal(ivae.prior.mu[6:], torch.zeros(2, 3)) and torch.equal(ivae.prior.mu[:6], mu[:6])
    vae = trained("vae")
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    vae.binarize_targets(torch.tensor([6, 7]))
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert vae.freeze_all_but_shifts(torch.tensor([6, 7])) == []


@pytest.mark.parametrize("method", SHIFT_METHODS)
def test_finetuning_changes_only_the_held_out_shifts(adata, trained, method):
    model = trained(method)
    data = run_data(adata)
    held_out = torch.as_tensor(data.heldout_perturbations)
    model.binarize_targets(held_out)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = finetune(model, data, held_out, TRAIN, TransferConfig(finetune_epochs=5))
    assert len(history) == 5
    after = model.state_dict()
    for key, value in before.items():
        if key != "prior.mu":
            assert torch.equal(value, after[key]), f"{key} changed"
    training_rows = np.setdiff1d(np.arange(8), data.heldout_perturbations)
    assert torch.equal(after["prior.mu"][training_rows], before["prior.mu"][training_rows])
    assert (after["prior.mu"][held_out] != 0).all()  # every held-out shift moved from 0


def test_finetuned_shifts_reach_the_optimum_of_the_elbo(adata, trained):
    """With the encoder frozen, the ELBO depends on a held-out shift only through the
    Gaussian KL, whose optimum is the mean of its cells' posterior means."""
    model = trained("ivae")
    data = run_data(adata)
    held_out = torch.as_tensor(data.heldout_perturbations)
    model.binarize_targets(held_out)
    full_batch = TrainConfig(batch_size=len(data.heldout_cells), seed=0)
    finetune(model, data, held_out, full_batch, TransferConfig(finetune_epochs=400, finetune_lr=0.05))
    x, labels = data.cells(data.heldout_cells)
    means = model.latent_means(x)
    for a in data.heldout_perturbations:
        torch.testing.assert_close(model.prior.mu[a], means[labels == a].mean(0), atol=2e-3, rtol=0)


@pytest.mark.parametrize("method", ["vae", "svae_plus"])
def test_transfer_run_reports_every_step(adata, trained, method, tmp_path):
    model = trained(method)
    cfg = TransferConfig(retrain_epochs=4, retrain_patience=None, finetune_epochs=3, particles=100)
    result = transfer_runs([model], [run_data(adata)], [TRAIN], cfg, stacked=False)[0]
    s = result.summary
    assert s["inll"] == pytest.approx(-s["iwelbo_heldout"])
    assert s["iwelbo_heldout"] > s["elbo_heldout"] and s["n_heldout_cells"] == 120
    assert len(result.retrain_history) == 4
    per_pert = result.per_perturbation
    assert list(per_pert["perturbation"]) == ["pert_006", "pert_007"]
    assert (per_pert["n_cells"] == 60).all()
    np.testing.assert_allclose(per_pert["inll"].mean(), s["inll"], rtol=1e-9)
    if method == "vae":  # nothing to fine-tune: step 3's model is step 2's
        assert len(result.finetune_history) == 0
        assert s["elbo_heldout"] == s["elbo_heldout_retrained"]
        assert s["iwelbo_heldout"] == s["iwelbo_heldout_retrained"]
    else:
        assert len(result.finetune_history) == 3
        assert s["iwelbo_heldout"] > s["iwelbo_heldout_retrained"]  # fitted shifts help
        # the step-2 model was kept: its held-out shifts are still 0, the fine-tuned ones are not
        assert torch.equal(result.retrained.prior.mu[6:], torch.zeros(2, 3))
        assert (result.finetuned.prior.mu[6:] != 0).all()
    # each step's model reloads as it was
    result.finetuned.save(tmp_path / "m.pt", tmp_path / "m.json")
    again = SparseShiftVAE.load(tmp_path / "m.pt", tmp_path / "m.json")
    for key, value in result.finetuned.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_no_held_out_cells_gives_nan_scores(trained):
    data = simulate(
        SimulationConfig(n_latent=3, n_perturbations=8, n_heldout=0, cells_per_perturbation=20,
                         n_genes=20, decoder_hidden=8, seed=0)
    )
    model = trained("svae_plus")
    result = transfer_runs([model], [run_data(data)], [TRAIN], TransferConfig(particles=10), stacked=False)[0]
    assert math.isnan(result.summary["inll"]) and result.per_perturbation.empty
    assert isinstance(result.finetune_history, pd.DataFrame) and result.finetuned is model


def test_a_diverging_retraining_stops_the_transfer_naming_its_step(adata, trained):
    cfg = TransferConfig(retrain_epochs=3, retrain_patience=None, finetune_epochs=2, particles=10)
    with pytest.raises(TrainingDiverged, match=r"step 2 of the transfer \(retraining\) .* in epoch 1"):
        transfer_runs([trained("svae_plus")], [run_data(adata)], [replace(TRAIN, lr=1e5)], cfg, stacked=False)


def test_a_diverging_fine_tuning_names_its_learning_rate(adata, trained, monkeypatch):
    from sparseshift import train

    check = train.check_epoch

    def diverge_in_step_3(means, elbo_val, has_val, weights_finite, epoch, lr, member=None):
        check([float("nan")] if lr == 0.005 else means, elbo_val, has_val, weights_finite, epoch, lr, member)

    monkeypatch.setattr(train, "check_epoch", diverge_in_step_3)
    cfg = TransferConfig(retrain_epochs=2, retrain_patience=None, finetune_epochs=2, particles=10)
    with pytest.raises(TrainingDiverged, match=r"step 3 of the transfer \(fine-tuning\) .*config key transfer\.finetune_lr"):
        transfer_runs([trained("svae_plus")], [run_data(adata)], [TRAIN], cfg, stacked=False)


def test_a_resumed_retraining_counts_the_time_of_every_attempt(adata, trained, monkeypatch, tmp_path):
    """Step 2 killed in its epoch 3 (checkpoints after epochs 1 and 2), then run again: it
    resumes, and retrain_seconds counts the killed attempt's two epochs as well as the rest."""
    from sparseshift import train

    check, ckpt = train.check_epoch, tmp_path / "transfer.pt"

    def killed_in_epoch_3(means, elbo_val, has_val, weights_finite, epoch, lr, member=None):
        if epoch == 3:
            raise KeyboardInterrupt  # stands for a killed job: its checkpoint stays
        check(means, elbo_val, has_val, weights_finite, epoch, lr, member)

    cfg = TransferConfig(retrain_epochs=4, retrain_patience=None, finetune_epochs=2, particles=10)
    train_cfg = replace(TRAIN, checkpoint_every=1)
    monkeypatch.setattr(train, "check_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        transfer_runs([trained("svae_plus")], [run_data(adata)], [train_cfg], cfg, ckpt, stacked=False)[0]
    killed = torch.load(ckpt, weights_only=False)["histories"][0]
    monkeypatch.setattr(train, "check_epoch", check)
    result, = transfer_runs([trained("svae_plus")], [run_data(adata)], [train_cfg], cfg, ckpt, stacked=False)
    history = result.retrain_history
    assert len(killed) == 2 and history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["train_seconds"].iloc[:2].tolist() == [row["train_seconds"] for row in killed]
    assert result.summary["retrain_seconds"] == pytest.approx(history["train_seconds"].sum())


def two_runs(adata, trained, method):
    """Two runs of ``method`` on one dataset (seeds 0 and 1: two validation splits)."""
    cfgs = [replace(TRAIN, seed=s) for s in (0, 1)]
    datas = [RunData(adata, c.val_fraction, c.seed, torch.device("cpu")) for c in cfgs]
    return [trained(method), trained(method)], datas, cfgs


@pytest.mark.parametrize("method", ["vae", "ivae", "svae_plus"])
def test_stacked_transfer_reports_every_step_of_every_run(adata, trained, method):
    models, datas, cfgs = two_runs(adata, trained, method)
    cfg = TransferConfig(retrain_epochs=4, retrain_patience=None, finetune_epochs=3, particles=100)
    results = transfer_runs(models, datas, cfgs, cfg, stacked=True)
    for result in results:
        s = result.summary
        assert s["inll"] == pytest.approx(-s["iwelbo_heldout"]) and np.isfinite(s["inll"])
        assert s["iwelbo_heldout"] > s["elbo_heldout"] and s["n_heldout_cells"] == 120
        assert len(result.retrain_history) == 4
        assert list(result.per_perturbation["perturbation"]) == ["pert_006", "pert_007"]
        retrained, tuned = result.retrained.state_dict(), result.finetuned.state_dict()
        if method == "vae":
            assert len(result.finetune_history) == 0 and s["iwelbo_heldout"] == s["iwelbo_heldout_retrained"]
            continue
        assert len(result.finetune_history) == 3
        assert s["iwelbo_heldout"] > s["iwelbo_heldout_retrained"]  # fitted shifts help
        # step 3 moved the held-out shifts only
        assert torch.equal(retrained["prior.mu"][6:], torch.zeros(2, 3))
        assert (tuned["prior.mu"][6:] != 0).all()
        for key, value in retrained.items():
            if key != "prior.mu":
                assert torch.equal(value, tuned[key]), key
        assert torch.equal(retrained["prior.mu"][:6], tuned["prior.mu"][:6])
        if method == "svae_plus":  # the mask was binarised before step 2, held-out rows all 1
            assert torch.equal(tuned["prior.fixed_mask"][6:], torch.ones(2, 3))
    # two runs, two different models
    assert not torch.equal(results[0].retrained.decoder[0].weight, results[1].retrained.decoder[0].weight)


def test_stacked_transfer_stops_each_run_early_and_scores_like_one_run_transfers(adata, trained):
    """Early stopping per run in step 2; the held-out I-NLL of each stacked run is that of
    its one-run transfer up to the noise of the random draws (the two seeds' spread)."""
    cfg = TransferConfig(retrain_epochs=30, retrain_patience=2, finetune_epochs=10, particles=200)
    models, datas, cfgs = two_runs(adata, trained, "svae_plus")
    stacked = transfer_runs(models, datas, cfgs, cfg, stacked=True)
    single = [transfer_runs([trained("svae_plus")], [d], [c], cfg, stacked=False)[0]
              for d, c in zip(datas, cfgs)]
    for result in stacked:
        assert len(result.retrain_history) < 30  # stopped early
    gap = [abs(a.summary["inll"] - b.summary["inll"]) for a, b in zip(stacked, single)]
    spread = abs(single[0].summary["inll"] - single[1].summary["inll"])
    assert max(gap) < max(2 * spread, 0.5)


@pytest.mark.parametrize("method, finetune_epochs", [("vae", 3), ("svae_plus", 3), ("svae_plus", 0)])
def test_step_2_iwelbo_can_be_left_out_but_never_the_final_one(adata, trained, method, finetune_epochs):
    """score_retrained false: step 2's IWELBO is NaN for models with a step 3, and computed
    where step 2's model is the final one (no shifts, or no fine-tuning epochs); the final
    I-NLL is that of the full protocol either way."""
    cfg = TransferConfig(retrain_epochs=2, retrain_patience=None, finetune_epochs=finetune_epochs, particles=50)
    full = transfer_runs([trained(method)], [run_data(adata)], [TRAIN], cfg, stacked=False)[0].summary
    lean_cfg = replace(cfg, score_retrained=False)
    lean = transfer_runs([trained(method)], [run_data(adata)], [TRAIN], lean_cfg, stacked=False)[0].summary
    assert lean["inll"] == full["inll"] and np.isfinite(lean["inll"])
    final_is_step_2 = method == "vae" or finetune_epochs == 0
    assert math.isnan(lean["iwelbo_heldout_retrained"]) != final_is_step_2
