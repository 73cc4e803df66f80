"""The training step replayed as a CUDA graph (sparseshift.step).

On CPU: the same step run eagerly on its static buffers (``capture=False``) trains exactly as
the training loop's own eager step, partial last minibatch and early stopping included; the
prior's ``frozen`` flag, read instead of a device buffer, follows saving, loading and the
transfer's binarisation. On CUDA: the captured step trains as the eager step does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sparseshift.batched import ModelStack
from sparseshift.methods import METHODS
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.step import CapturedStep, make_capturable
from sparseshift.train import TrainConfig, train_models
from sparseshift.trainee import OneModel, TrainingData

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA: the captured step replays a CUDA graph")

N_CELLS, N_VAL, GENES, PERTURBATIONS = 300, 30, 12, 5
BATCH = 32  # 270 training cells: 8 full minibatches and one of 14


def config(method: str, **kw) -> ModelConfig:
    return ModelConfig(method=method, n_genes=GENES, n_latent=3, n_perturbations=PERTURBATIONS, n_hidden=16,
                       hyperparameters={"alpha": 5.0, "lambda": 1.0}, **kw)


def dataset(device: str):
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(N_CELLS, GENES, generator=gen) * 10, generator=gen)
    labels = torch.randint(0, PERTURBATIONS, (N_CELLS,), generator=gen)
    return x.to(device), labels.to(device), np.arange(N_VAL, N_CELLS), np.arange(N_VAL)


def train(method: str | list[str], n_models: int, step: CapturedStep | None, device: str = "cpu", epochs: int = 3,
          patience: int | None = None, batch_size: int = BATCH, lr: float = 5e-3, **model_kw):
    """``n_models`` models (one: OneModel; more: a ModelStack; ``method`` a list: model i of
    method i, a stack of several methods) trained by train_models with ``step`` (None: its
    eager loop); returns the histories (less the seconds) and weights."""
    x, labels, train_idx, val_idx = dataset(device)
    methods = method if isinstance(method, list) else [method] * n_models
    models = []
    for seed in range(n_models):
        torch.manual_seed(seed)
        models.append(SparseShiftVAE(config(methods[seed], **model_kw)).to(device))
    if n_models == 1:
        def build(ms):
            return OneModel(ms[0], lr, [p for p in ms[0].parameters() if p.requires_grad])
    else:
        def build(ms):
            return ModelStack(ms).optimise(lr)
    data = TrainingData([x] * n_models, [labels] * n_models, [train_idx] * n_models, [val_idx] * n_models)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_epochs=2, patience=patience,
                      cuda_graph=False)  # the default step off: the step is the one given
    torch.manual_seed(123)
    histories = train_models(models, data, cfg, list(range(n_models)), build, step=step)
    histories = [h.drop(columns="train_seconds") for h in histories]
    return histories, [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in models]


def assert_same_training(a, b, exact: bool = True):
    (ha, wa), (hb, wb) = a, b
    assert len(ha) == len(hb)
    for h, g in zip(ha, hb):
        assert h.shape == g.shape and len(h) > 0
        if exact:
            assert h.equals(g), (h, g)
        else:
            np.testing.assert_allclose(h.to_numpy(float), g.to_numpy(float), rtol=1e-4, atol=1e-4)
    for sa, sb in zip(wa, wb):
        assert sa.keys() == sb.keys()
        for name in sa:
            if exact:
                assert torch.equal(sa[name], sb[name]), name
            else:
                torch.testing.assert_close(sa[name], sb[name], rtol=1e-4, atol=1e-5, msg=name)


# ----------------------------------------------------------------------------- CPU


@pytest.mark.parametrize("method, n_models, model_kw", [
    ("svae_plus", 1, {}),
    ("ivae", 1, {"batch_norm": True, "dropout": 0.1}),
    ("svae", 3, {}),
    (list(METHODS), 5, {}),  # every method in one stack (stack_methods)
])
def test_the_uncaptured_step_trains_exactly_as_the_eager_loop(method, n_models, model_kw):
    """Static buffers, a tensor KL weight, gradients zeroed in place and the partial last
    minibatch run apart change no number of the training (losses, ELBOs, weights,
    BatchNorm statistics)."""
    assert (N_CELLS - N_VAL) % BATCH != 0  # a partial last minibatch every epoch
    eager = train(method, n_models, None, **model_kw)
    step = CapturedStep(BATCH, capture=False)
    stepped = train(method, n_models, step, **model_kw)
    assert_same_training(eager, stepped)
    assert step.captures == 0 and step.x.shape[:2] == (n_models, BATCH)
    # and the training did something: the weights moved from their initial values
    torch.manual_seed(0)
    initial = SparseShiftVAE(config(method if isinstance(method, str) else method[0], **model_kw)).state_dict()
    assert not torch.equal(initial["encoder.0.weight"], stepped[1][0]["encoder.0.weight"])


def test_the_uncaptured_step_follows_early_stopping_and_batches_smaller_than_one_minibatch():
    """A stack whose models stop at different epochs: the step prepares new buffers for the
    smaller stack (``select``), with the same numbers as the eager loop. With fewer training
    cells than one minibatch every step is a partial one."""
    kw = dict(epochs=8, patience=1, lr=0.05)
    eager = train("vae", 3, None, **kw)
    stepped = train("vae", 3, CapturedStep(BATCH, capture=False), **kw)
    lengths = [len(h) for h in eager[0]]
    assert min(lengths) < 8 and len(set(lengths)) > 1, lengths  # models left the stack one by one
    assert_same_training(eager, stepped)
    assert_same_training(train("svae_plus", 2, None, batch_size=512),
                         train("svae_plus", 2, CapturedStep(512, capture=False), batch_size=512))


def test_a_tensor_kl_weight_gives_the_float_weights_loss():
    """The step's KL weight is a 0-dim tensor: the same loss, parts and gradient as the float,
    the sVAE+ Beta term (weighted by it) included."""
    x, labels, _, _ = dataset("cpu")
    model = SparseShiftVAE(config("svae_plus"))
    results = []
    for weight in (0.3, torch.tensor(0.3)):
        torch.manual_seed(5)
        model.zero_grad()
        loss, parts = model.loss(x[:40], labels[:40], kl_weight=weight, n_obs=270)
        loss.backward()
        results.append((loss.detach(), parts["penalty"].detach(), model.prior.logits.grad.clone()))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert results[0][1] != 0  # the Beta term is weighted by the KL weight, and present
    vae_penalty = SparseShiftVAE(config("vae")).loss(x[:4], labels[:4])[1]["penalty"]
    assert vae_penalty.shape == () and vae_penalty.dtype == x.dtype and float(vae_penalty) == 0.0


def test_the_frozen_flag_follows_binarisation_saving_and_loading(tmp_path):
    """``frozen`` is a Python flag (a CUDA graph cannot read a device buffer); the buffer
    ``mask_frozen`` stays in the state dict, and loading a state dict sets the flag from it."""
    model = SparseShiftVAE(config("svae_plus"))
    assert model.prior.frozen is False
    model.binarize_targets(torch.tensor([0]))
    assert model.prior.frozen is True and bool(model.state_dict()["prior.mask_frozen"])
    model.save(tmp_path / "w.pt", tmp_path / "c.json")
    loaded = SparseShiftVAE.load(tmp_path / "w.pt", tmp_path / "c.json")
    assert loaded.prior.frozen is True
    torch.testing.assert_close(loaded.prior.target_graph(), model.prior.target_graph())
    # the frozen mask is the fixed graph, in training too: no random mask
    loaded.train()
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(loaded.prior.mask(labels), loaded.prior.fixed_mask[labels])
    # an unfrozen state dict unfreezes
    loaded.load_state_dict(SparseShiftVAE(config("svae_plus")).state_dict())
    assert loaded.prior.frozen is False
    # a stack of frozen models keeps the flag (its copy of the first model holds it)
    frozen = [SparseShiftVAE(config("svae_plus")) for _ in range(2)]
    for m in frozen:
        m.binarize_targets(torch.tensor([1]))
    assert ModelStack(frozen)._call.model.prior.frozen is True
    with pytest.raises(ValueError, match="frozen"):
        ModelStack([frozen[0], SparseShiftVAE(config("svae_plus"))])


def test_capture_needs_cuda_and_flags_adam_capturable():
    x, labels, _, _ = dataset("cpu")
    model = SparseShiftVAE(config("vae"))
    trainee = OneModel(model, 1e-3, list(model.parameters()))
    assert trainee.optimiser.param_groups[0]["capturable"] is False
    make_capturable(trainee.optimiser)
    assert trainee.optimiser.param_groups[0]["capturable"] is True
    with pytest.raises(ValueError, match="CUDA"):
        CapturedStep(BATCH).epoch(trainee, [(x[None, :BATCH], labels[None, :BATCH], BATCH)], 1.0, 270)


# ----------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("method, n_models, model_kw", [
    ("svae_plus", 1, {}),
    ("ivae", 1, {"batch_norm": True, "dropout": 0.1}),
    ("vae", 3, {}),
    (list(METHODS), 5, {}),  # every method in one stack (stack_methods)
])
def test_the_captured_step_trains_as_the_eager_step(method, n_models, model_kw):
    """Replaying the graph gives the eager step's losses and weights (up to float rounding):
    the same steps, the same random draws, the partial last minibatch included."""
    eager = train(method, n_models, None, device="cuda", **model_kw)
    step = CapturedStep(BATCH)
    captured = train(method, n_models, step, device="cuda", **model_kw)
    assert step.captures == 1 and step.graph is not None
    assert_same_training(eager, captured, exact=False)


@needs_cuda
def test_the_captured_step_captures_anew_when_models_stop_early():
    kw = dict(epochs=8, patience=1, lr=0.05, device="cuda")
    eager = train("vae", 3, None, **kw)
    step = CapturedStep(BATCH)
    captured = train("vae", 3, step, **kw)
    lengths = [len(h) for h in eager[0]]
    assert len(set(lengths)) > 1, lengths
    assert step.captures >= 2  # one per stack that trained for more than its warm-up
    assert_same_training(eager, captured, exact=False)


@needs_cuda
def test_fit_uses_the_captured_step_on_cuda_by_default(monkeypatch):
    """TrainConfig.cuda_graph (default True) picks the captured step on CUDA."""
    import sparseshift.train as train_module

    made = []

    class Spy(CapturedStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train_module, "CapturedStep", Spy)
    x, labels, train_idx, val_idx = dataset("cuda")
    model = SparseShiftVAE(config("svae_plus")).to("cuda")
    train_module.fit(model, x, labels, train_idx, val_idx, TrainConfig(epochs=2, batch_size=BATCH))
    assert len(made) == 1 and made[0].captures == 1
    train_module.fit(model, x, labels, train_idx, val_idx, TrainConfig(epochs=1, batch_size=BATCH, cuda_graph=False))
    assert len(made) == 1
