"""The VAE, its priors and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from sparseshift.methods import METHODS
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.priors import SparseShiftPrior, straight_through_gumbel_sigmoid
from sparseshift.simulate import SimulationConfig, simulate
from sparseshift.train import TrainConfig, TrainingDiverged, epoch_line, fit, kl_weight_at


def make_model(method: str, n_genes: int = 20, n_latent: int = 3, n_perturbations: int = 5, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(
        method=method, n_genes=n_genes, n_latent=n_latent, n_perturbations=n_perturbations, **kw
    )
    return SparseShiftVAE(cfg)


def test_nb_log_density_matches_scipy():
    model = make_model("vae", n_genes=6).double()  # float64: compare to 1e-8, not float32 rounding
    with torch.no_grad():
        model.log_theta.copy_(torch.log(torch.tensor([0.5, 1.0, 2.0, 10.0, 50.0, 300.0])))
    z = torch.randn(4, 3, dtype=torch.float64)
    library = torch.tensor([[10.0], [200.0], [1000.0], [5e4]], dtype=torch.float64)
    with torch.no_grad():
        px = model.likelihood(z, library)
    x = torch.poisson(px.mean)
    ours = px.log_prob(x).double().numpy()
    theta = model.log_theta.detach().exp().double().numpy()
    mean = px.mean.double().numpy()
    ref = scipy.stats.nbinom.logpmf(x.numpy(), theta, theta / (theta + mean))
    np.testing.assert_allclose(ours, ref, rtol=1e-8)
    # and the mean is library * softmax(decoder(z))
    with torch.no_grad():
        rho = torch.softmax(model.decoder(z), -1)
    torch.testing.assert_close(px.mean, library * rho)


def test_straight_through_mask_forward_hard_backward_nonzero():
    logits = torch.tensor([20.0, 5.0, -20.0], requires_grad=True)
    torch.manual_seed(0)
    m = straight_through_gumbel_sigmoid(logits, temperature=1.0)
    assert m.tolist() == [1.0, 1.0, 0.0]
    m.sum().backward()
    assert logits.grad[0] > 0 and logits.grad[1] > 0 and logits.grad[2] > 0
    # the gradient is the relaxed sample's: largest near the decision boundary
    assert logits.grad[1] > logits.grad[0]


class _ReferenceStep(torch.autograd.Function):
    """The straight-through step as an autograd.Function: step forward, sigmoid(v) * sigmoid(-v) backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(v):
        return (v > 0).to(v.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * torch.sigmoid(v) * torch.sigmoid(-v)


@pytest.mark.parametrize("batched", [False, True])
def test_straight_through_step_equals_the_function_bit_for_bit(batched):
    """The plain-operation step gives the Function's values and gradients exactly, alone and
    under vmap (as in a stack of models), for logits from the boundary to far beyond it."""
    from sparseshift.priors import straight_through_step

    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(3, 40, 10, generator=g) * s for s in (0.1, 3.0, 15.0)])
    upstream = torch.randn(v.shape, generator=g)
    grads = []
    for fn in (straight_through_step, _ReferenceStep.apply):
        leaf = v.clone().requires_grad_(True)
        out = torch.func.vmap(fn)(leaf) if batched else fn(leaf)
        (out * upstream).sum().backward()
        grads.append((out.detach(), leaf.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    assert (grads[0][1] != 0).all()  # non-zero even where sigmoid(v) rounds to 1


def test_mask_sampling_frequency_follows_sigmoid():
    torch.manual_seed(1)
    logits = torch.full((20000,), 0.8)
    m = straight_through_gumbel_sigmoid(logits)
    assert abs(m.mean().item() - torch.sigmoid(torch.tensor(0.8)).item()) < 0.015


def test_label_never_reaches_the_decoder():
    """The likelihood of a cell depends on its label only through the prior (KL term)."""
    model = make_model("ivae")
    x = torch.poisson(torch.full((8, 20), 30.0))
    z = model.encode(x).loc
    lib = x.sum(-1, keepdim=True)
    a = model.likelihood(z, lib).log_prob(x)
    # changing the perturbation parameters changes nothing in the likelihood
    with torch.no_grad():
        model.prior.mu.add_(10.0)
    b = model.likelihood(z, lib).log_prob(x)
    torch.testing.assert_close(a, b)


def test_svae_plus_penalty_is_minus_log_beta_over_n():
    model = make_model("svae_plus", hyperparameters={"alpha": 7.0})
    prior = model.prior
    assert isinstance(prior, SparseShiftPrior)
    with torch.no_grad():
        prior.logits.uniform_(-3, 3)
    q = torch.sigmoid(prior.logits).double()
    expected = -(np.log(7.0) + 6.0 * torch.log1p(-q)).sum() / 100
    torch.testing.assert_close(prior.penalty(100, 1.0).double(), expected, rtol=1e-4, atol=1e-6)
    assert prior.penalty(100, 0.0) == 0  # warmed up with the KL


def test_svae_penalty_is_lambda_mean_probability():
    model = make_model("svae", hyperparameters={"lambda": 3.0})
    torch.testing.assert_close(model.prior.penalty(100, 0.0), 3.0 * torch.sigmoid(torch.tensor(5.0)))


def test_eval_mask_is_the_learned_graph():
    model = make_model("svae_plus", hyperparameters={"alpha": 10.0})
    with torch.no_grad():
        model.prior.logits.copy_(torch.tensor([[3.0, -3.0, 0.5]] * 5))
        model.prior.mu.fill_(2.0)
    model.eval()
    shift = model.prior.shift(torch.tensor([0, 4]))
    assert shift.tolist() == [[2.0, 0.0, 2.0], [2.0, 0.0, 2.0]]
    assert model.prior.target_graph()[0].tolist() == [1.0, 0.0, 1.0]
    assert model.prior.mask_density() == pytest.approx(2 / 3)


def test_ivae_graph_is_top2_abs_mean():
    model = make_model("ivae", n_latent=4)
    with torch.no_grad():
        model.prior.mu.copy_(torch.tensor([[0.1, -3.0, 2.0, 0.5]] * 5))
    assert model.prior.target_graph()[0].tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("method", METHODS)
def test_training_steps_lower_the_loss(method):
    model = make_model(method, hyperparameters={"beta": 8.0 if method == "beta_vae" else 1.0, "alpha": 5.0})
    x = torch.poisson(torch.rand(64, 20) * 50)
    labels = torch.randint(0, 5, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.standardize_inputs(x)
    torch.manual_seed(0)
    first, _ = model.loss(x, labels, 1.0, n_obs=64)
    for _ in range(30):
        loss, _ = model.loss(x, labels, 1.0, n_obs=64)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(0)
    last, _ = model.loss(x, labels, 1.0, n_obs=64)
    assert last.item() < first.item() - 1.0


def test_kl_warmup_is_linear():
    assert [kl_weight_at(e, 4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight_at(0, 0) == 1.0


def tiny_data(seed=0):
    adata = simulate(
        SimulationConfig(
            n_latent=3, n_perturbations=6, n_heldout=1, cells_per_perturbation=40, n_genes=20,
            decoder_hidden=8, seed=seed,
        )
    )
    x = torch.as_tensor(adata.X)
    labels = torch.as_tensor(adata.obs["perturbation_index"].to_numpy(), dtype=torch.long)
    return x, labels


def train_once(checkpoint=None, epochs=6, seed=0):
    x, labels = tiny_data()
    model = make_model("svae_plus", n_genes=20, n_perturbations=6, hyperparameters={"alpha": 6.0})
    torch.manual_seed(seed)
    cfg = TrainConfig(epochs=epochs, batch_size=32, warmup_epochs=2, checkpoint_every=2, seed=seed)
    hist = fit(model, x, labels, np.arange(180), np.arange(180, 200), cfg, checkpoint)
    return model, hist


def test_same_seed_same_numbers():
    m1, h1 = train_once()
    m2, h2 = train_once()
    timing = ["train_seconds"]
    assert h1.drop(columns=timing).equals(h2.drop(columns=timing))
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


def test_killed_run_resumes_from_checkpoint_to_the_same_result(tmp_path):
    ckpt = tmp_path / "run.pt"
    full, h_full = train_once()
    train_once(ckpt, epochs=4)  # "killed" after 4 of 6 epochs: the checkpoint stays
    assert ckpt.exists()
    resumed, h_res = train_once(ckpt, epochs=6)
    assert len(h_res) == 6
    np.testing.assert_allclose(h_res["loss"].to_numpy(), h_full["loss"].to_numpy(), rtol=1e-6)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_save_and_load_weights_only(tmp_path):
    model, _ = train_once(epochs=2)
    model.save(tmp_path / "m.pt", tmp_path / "m.json")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert "prior.logits" in state
    again = SparseShiftVAE.load(tmp_path / "m.pt", tmp_path / "m.json")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    x, labels = tiny_data()
    model = make_model("svae_plus", n_genes=20, n_perturbations=6, hyperparameters={"alpha": 6.0})
    scripted = iter([-10.0, -5.0, -7.0, -8.0, -9.0, -9.5])
    snapshots = []

    def fake_elbo(xv, lv, chunk=4096):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return torch.tensor(next(scripted))

    monkeypatch.setattr(model, "elbo", fake_elbo)
    cfg = TrainConfig(epochs=6, batch_size=32, warmup_epochs=0, patience=2, seed=0)
    hist = fit(model, x, labels, np.arange(180), np.arange(180, 200), cfg)
    assert list(hist["epoch"]) == [1, 2, 3, 4]  # best at 2, two epochs without improvement
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k


def test_a_diverging_fit_stops_in_the_first_epoch_with_a_non_finite_loss(tmp_path):
    x, labels = tiny_data()
    model = make_model("svae_plus", n_genes=20, n_perturbations=6, hyperparameters={"alpha": 6.0})
    cfg = TrainConfig(epochs=4, batch_size=32, warmup_epochs=2, lr=1e5, checkpoint_every=1, seed=0)
    with pytest.raises(TrainingDiverged, match="training loss became non-finite in epoch 1") as err:
        fit(model, x, labels, np.arange(180), np.arange(180, 200), cfg, tmp_path / "ckpt.pt")
    assert err.value.epoch == 1 and "lower learning rate" in str(err.value)
    assert not (tmp_path / "ckpt.pt").exists()  # the diverged epoch is not checkpointed


def test_a_non_finite_gradient_stops_training_in_its_epoch():
    """A NaN gradient in the last minibatch of epoch 2 leaves that epoch's loss finite but
    the weights not: training stops in epoch 2, naming the gradient."""
    x, labels = tiny_data()
    model = make_model("svae_plus", n_genes=20, n_perturbations=6, hyperparameters={"alpha": 6.0})
    calls = {"n": 0}
    per_epoch = 6  # 180 training cells in minibatches of 32

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 2 * per_epoch else grad

    model.decoder[0].weight.register_hook(poison)
    cfg = TrainConfig(epochs=4, batch_size=32, warmup_epochs=2, seed=0)
    with pytest.raises(TrainingDiverged, match="gradient became non-finite in epoch 2"):
        fit(model, x, labels, np.arange(180), np.arange(180, 200), cfg)


def test_epoch_lines_show_a_mask_density_only_for_models_with_a_mask():
    row = {"epoch": 3, "loss": 1.0, "elbo_train": -1.0, "elbo_val": -2.0, "kl_weight": 0.5}
    assert "mask_density" not in epoch_line({**row, "mask_density": float("nan")}, 10)
    assert epoch_line({**row, "mask_density": 0.25}, 10).endswith("mask_density 0.250")


def test_batch_norm_model_scores_particles_cell_by_cell():
    """With the released code's BatchNorm layers, the IWELBO's particles x cells x latents
    input is normalised row by row (evaluation mode: running statistics), as one cell at a
    time would be, instead of failing on a 3-D input."""
    model = make_model("svae_plus", batch_norm=True, dropout=0.1)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bn, "batch_norm=True builds BatchNorm layers"
    for m in bn:  # running statistics away from the identity
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
    model.eval()
    z = torch.randn(4, 6, 3)
    batched = model.decoder(z)
    one_by_one = torch.stack([model.decoder(z[i]) for i in range(4)])
    torch.testing.assert_close(batched, one_by_one)
    x = torch.poisson(torch.full((6, 20), 3.0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    scores = model.iwelbo(x, labels, 8, torch.Generator().manual_seed(0))
    assert scores.shape == (6,) and torch.isfinite(scores).all()


def test_a_model_json_of_the_earlier_layout_still_loads(tmp_path):
    """Runs written before the config keys and ModelConfig fields were made equal (``beta``,
    ``alpha``, ``lam``, ``init_logit``, ``graph_top_k`` at the top level) load as they were."""
    import json

    model = make_model("svae", hyperparameters={"lambda": 3.0}, mask_init_logit=2.0)
    model.save(tmp_path / "m.pt", tmp_path / "m.json")
    old = {k: v for k, v in model.cfg.to_dict().items() if k not in ("hyperparameters", "mask_init_logit",
                                                                      "ivae_graph_top_k")}
    old.update(beta=1.0, alpha=None, lam=3.0, init_logit=2.0, graph_top_k=2)
    (tmp_path / "m.json").write_text(json.dumps(old))
    loaded = SparseShiftVAE.load(tmp_path / "m.pt", tmp_path / "m.json")
    assert loaded.cfg == model.cfg
    assert float(loaded.prior.lam) == 3.0 and float(loaded.prior.kl_scale) == 1.0
