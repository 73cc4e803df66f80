"""The released code's optimiser as options (issue 29, point 5): Adam's eps and weight decay,
and the per-cell loss multiplied by the number of training cells."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from sparseshift.batched import fit_many
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.plan import ConfigError, Plan
from sparseshift.step import CapturedStep
from sparseshift.train import TrainConfig, fit, train_models
from sparseshift.trainee import OneModel, TrainingData
from test_plan import filled

REPO = Path(__file__).resolve().parents[1]
N_CELLS, N_VAL, GENES, K = 200, 20, 12, 4
TRAIN_IDX, VAL_IDX = np.arange(N_VAL, N_CELLS), np.arange(N_VAL)


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(N_CELLS, GENES, generator=gen) * 10, generator=gen)
    return x, torch.randint(0, K, (N_CELLS,), generator=gen)


def model(method="svae_plus", seed=0):
    torch.manual_seed(seed)
    return SparseShiftVAE(ModelConfig(method=method, n_genes=GENES, n_latent=3, n_perturbations=K, n_hidden=16,
                                      hyperparameters={"alpha": 5.0, "lambda": 1.0}))


def trained(cfg: TrainConfig, n_models: int = 1):
    x, labels = data()
    models = [model(seed=s) for s in range(n_models)]
    torch.manual_seed(7)
    if n_models == 1:
        fit(models[0], x, labels, TRAIN_IDX, VAL_IDX, cfg)
    else:
        fit_many(models, [x] * n_models, [labels] * n_models, [TRAIN_IDX] * n_models, [VAL_IDX] * n_models, cfg)
    return [m.state_dict() for m in models]


BASE = TrainConfig(epochs=3, batch_size=32, lr=5e-3, warmup_epochs=1, seed=0)


@pytest.mark.parametrize("n_models", [1, 2])
def test_the_loss_is_multiplied_by_the_number_of_training_cells(n_models):
    """Adam is invariant to the loss's scale but for eps: loss x n with eps x n takes the
    steps of loss x 1 with eps (up to rounding); with the same eps it does not. So the
    multiplier is applied, and it is the number of training cells."""
    n = len(TRAIN_IDX)
    plain = trained(BASE.__class__(**{**vars(BASE), "adam_eps": 1e-3}), n_models)
    scaled = trained(BASE.__class__(**{**vars(BASE), "adam_eps": 1e-3 * n, "loss_times_cells": True}), n_models)
    other = trained(BASE.__class__(**{**vars(BASE), "adam_eps": 1e-3, "loss_times_cells": True}), n_models)
    for a, b, c in zip(plain, scaled, other):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=name)
        assert any(not torch.allclose(a[name], c[name], rtol=1e-3, atol=1e-4) for name in a)


def test_the_defaults_train_exactly_as_torch_adam_defaults():
    """eps and weight decay at their defaults: the numbers of torch's own Adam defaults (those
    of the pipeline before the options), bit for bit."""
    x, labels = data()
    out = []
    for torch_defaults in (False, True):
        m = model()

        def build(ms):
            one = OneModel(ms[0], BASE.lr, list(ms[0].parameters()), BASE.adam_eps, BASE.weight_decay)
            if torch_defaults:
                one.optimiser = torch.optim.Adam(one.parameters, lr=BASE.lr, fused=True)
            return one

        torch.manual_seed(3)
        train_models([m], TrainingData([x], [labels], [TRAIN_IDX], [VAL_IDX]), BASE, [0], build)
        out.append(m.state_dict())
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_eps_and_weight_decay_reach_every_optimiser():
    cfg = TrainConfig(adam_eps=0.01, weight_decay=1e-6)
    m = model()
    one = OneModel(m, 1e-3, list(m.parameters()), cfg.adam_eps, cfg.weight_decay)
    built = []

    def build(ms):
        from sparseshift.batched import ModelStack
        stack = ModelStack(ms).optimise(1e-3, None, cfg.adam_eps, cfg.weight_decay)
        built.append(stack)
        return stack

    x, labels = data()
    train_models([model(seed=0), model(seed=1)], TrainingData([x] * 2, [labels] * 2, [TRAIN_IDX] * 2, [VAL_IDX] * 2),
                 TrainConfig(epochs=1, batch_size=64), [0, 1], build)
    kept = built[0].select([1])  # early stopping's smaller stack keeps the settings
    for optimiser in (one.optimiser, built[0].optimiser, kept.optimiser):
        group = optimiser.param_groups[0]
        assert group["eps"] == 0.01 and group["weight_decay"] == 1e-6


def test_weight_decay_shrinks_the_weights():
    decayed = trained(BASE.__class__(**{**vars(BASE), "weight_decay": 1.0}))[0]
    plain = trained(BASE)[0]
    norm = lambda sd: sum(float(v.float().norm()) for k, v in sd.items() if k.startswith("encoder"))  # noqa: E731
    assert norm(decayed) < norm(plain)


def test_the_captured_step_scales_the_loss_as_the_eager_loop():
    x, labels = data()
    cfg = TrainConfig(epochs=2, batch_size=32, lr=5e-3, warmup_epochs=1, loss_times_cells=True, adam_eps=1e-3,
                      cuda_graph=False)
    out = []
    for step in (None, CapturedStep(32, capture=False)):
        m = model()
        torch.manual_seed(3)
        train_models([m], TrainingData([x], [labels], [TRAIN_IDX], [VAL_IDX]), cfg, [0],
                     lambda ms: OneModel(ms[0], cfg.lr, list(ms[0].parameters()), cfg.adam_eps), step=step)
        out.append(m.state_dict())
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_the_plan_gives_the_flag_to_the_listed_methods_only():
    config = filled(REPO / "tests" / "configs" / "tiny.yaml")
    config["train"] = {**config["train"], "loss_times_cells": ["svae_plus"], "adam_eps": 0.01}
    plan = Plan(copy.deepcopy(config))
    for member in plan.members():
        settings = plan.train_settings(member)
        assert settings.get("loss_times_cells", False) == (member.method == "svae_plus")
        assert settings["adam_eps"] == 0.01
        TrainConfig(**settings)
    # absent: the jobs' parameters are today's
    plain = Plan(filled(REPO / "tests" / "configs" / "tiny.yaml"))
    assert all({"loss_times_cells", "adam_eps", "weight_decay"}.isdisjoint(plain.train_settings(m))
               for m in plain.members())
    config["train"]["loss_times_cells"] = ["svae_pls"]
    with pytest.raises(ConfigError, match="train.loss_times_cells.0"):
        Plan(config)
