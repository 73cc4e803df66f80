"""Several models of one architecture trained as one batched model.

A small model (the paper simulation: 100 genes, 2 x 128 MLPs, batch 128) does too
little arithmetic per step to keep a GPU busy, and on a CPU most of its step is
per-operation overhead. :class:`ModelStack` stacks the parameters of N models of
the same :class:`~sparseshift.model.ModelConfig` (seeds, datasets of the same shape)
along a leading dimension and evaluates the model's own ``loss`` on all of them at
once with :func:`torch.func.vmap`: one operation per layer instead of N, and one
fused Adam step over the stacked tensors, which is the same update as N separate
Adam optimisers (Adam acts element-wise). The model class is not duplicated; each
model keeps its own data, minibatch order and random draws.

Models of different methods (sizes and settings equal otherwise) stack too: each then trains
with a :class:`MixedPrior`, every method's prior written with per-model buffers (the stack key
``stack_methods``: a dataset's methods in one job, e.g. the whole grid in one process on a GPU).

A :class:`ModelStack` with an optimiser (:meth:`ModelStack.optimise`) is a
:class:`sparseshift.trainee.Trainee`: :func:`fit_many` trains it with the training loop of
:func:`sparseshift.train.fit`, :func:`sparseshift.train.train_models` (resumable, early
stopping per model); ``python benchmarks/train.py --models N`` measures it.
"""

from __future__ import annotations

import copy
import operator
import os

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .model import PER_MODEL, SparseShiftVAE
from .priors import BetaMaskPrior, L1MaskPrior, Prior, ShiftPrior, SparseShiftPrior
from .train import TrainConfig, train_models
from .trainee import TrainingData, adam

# The same for every model of a stack, and read by the prior as its Python flag ``frozen``
# (vmap cannot branch on a batched tensor, nor a CUDA graph on a device value): kept out of
# the batched buffers, the stack's copy of the first model holds it.
_SHARED_BUFFERS = ("prior.mask_frozen",)


class MixedPrior(Prior):
    """The prior of any method, its differences held as per-model buffers, so that models of
    several methods train as one stack (:class:`ModelStack`): the prior mean is
    ``shifted * mu_a * (masked * m_a + 1 - masked)`` and the global term
    ``lam * mean(q) + spike * (-kl_weight * sum log Beta(q; 1, alpha) / n_obs)``, with
    shifted, masked, lam, spike and alpha from the model's own prior (0, 0, 0, 0 and 1 where
    the method has no such part) and its ``kl_scale``. For each method these are its own
    prior's numbers, bit for bit (tests/test_batched.py); a parameter the method lacks (VAE's
    mu, iVAE's mask logits) gets a zero gradient, so Adam leaves it as it is, and is not
    written back. Training only: a prior whose mask is frozen (the transfer) is refused.
    """

    def __init__(self, prior: Prior):
        members = (prior.members, prior.member_valid) if prior.combined else None
        super().__init__(prior.n_perturbations, prior.n_latent, members, temperature=prior.temperature)
        if getattr(prior, "frozen", False):
            raise ValueError("MixedPrior: a prior with a frozen target mask (the transfer) trains in a stack of its own method")
        self.kl_scale.copy_(prior.kl_scale)
        zeros = torch.zeros(prior.n_perturbations, prior.n_latent)
        shifted, masked = isinstance(prior, ShiftPrior), isinstance(prior, SparseShiftPrior)
        self.mu = nn.Parameter(prior.mu.detach().clone() if shifted else zeros.clone())
        self.logits = nn.Parameter(prior.logits.detach().clone() if masked else zeros.clone())
        flags = {"shifted": float(shifted), "masked": float(masked),
                 "lam": float(prior.lam) if isinstance(prior, L1MaskPrior) else 0.0,
                 "spike": float(isinstance(prior, BetaMaskPrior)),
                 "alpha": float(prior.alpha) if isinstance(prior, BetaMaskPrior) else 1.0}
        for name, value in flags.items():
            self.register_buffer(name, torch.tensor(value), persistent=False)

    # the masked methods' own mask draw and sparsity terms, on this prior's buffers (never frozen)
    frozen = learning = False
    mask = SparseShiftPrior.mask

    def shift(self, labels: torch.Tensor) -> torch.Tensor:
        def rows_shift(rows):
            return self.shifted * self.mu[rows] * (self.masked * self.mask(rows) + (1 - self.masked))

        return self.summed(labels, rows_shift) if self.combined else rows_shift(labels)

    def penalty(self, n_obs: int, kl_weight: float) -> torch.Tensor:
        q = torch.sigmoid(self.logits)
        return (L1MaskPrior.sparsity(self, q, n_obs, kl_weight)
                + self.spike * BetaMaskPrior.sparsity(self, q, n_obs, kl_weight))

    def mask_density(self) -> float:
        return float((self.logits.detach() > 0).float().mean()) if bool(self.masked) else float("nan")


def stackable(models: list[SparseShiftVAE]) -> list[SparseShiftVAE]:
    """``models`` themselves when they share their method, else copies of them with a
    :class:`MixedPrior` each (the same parameters under the same names)."""
    if len({m.cfg.method for m in models}) == 1:
        return models
    out = []
    for model in models:
        mixed = copy.deepcopy(model)
        mixed.prior = MixedPrior(model.prior).to(model.log_theta.device)  # built on the CPU
        out.append(mixed)
    return out


class _Call(nn.Module):
    """Calls any method of the wrapped model, so ``functional_call`` can swap its tensors."""

    def __init__(self, model: SparseShiftVAE):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args, **kwargs):
        return operator.attrgetter(method)(self.model)(*args, **kwargs)


class ModelStack:
    """N models of one configuration as stacked tensors (leading dimension: the model);
    with an optimiser (:meth:`optimise`), a :class:`sparseshift.trainee.Trainee`."""

    stacked = True
    optimiser: torch.optim.Adam | None = None

    def __init__(self, models: list[SparseShiftVAE]):
        if not models:
            raise ValueError("ModelStack needs at least one model")
        def key(model):  # the stack key, up to the method (MixedPrior)
            return {**model.cfg.stack_key(), "method": None}

        first = key(models[0])
        for i, model in enumerate(models[1:], start=1):
            if key(model) != first:
                raise ValueError(
                    f"ModelStack: model {i} has another configuration than model 0 (only models "
                    f"of one ModelConfig, up to the method and the swept {', '.join(PER_MODEL)}, can be stacked)"
                )
        if len({getattr(m.prior, "frozen", False) for m in models}) > 1:
            raise ValueError("ModelStack: some models have a frozen target mask and others not")
        if models[0].cfg.batch_norm:
            # vmap evaluates functional copies: BatchNorm's running statistics would never be
            # updated, and the trained models would normalise with their initial 0 / 1.
            raise ValueError("ModelStack: models with batch_norm cannot be stacked; train them one by one")
        models = stackable(models)
        self._call = _Call(copy.deepcopy(models[0]))
        params, buffers = stack_module_state(models)
        self.params = {f"model.{k}": v for k, v in params.items()}
        self.buffers = {f"model.{k}": v for k, v in buffers.items() if k not in _SHARED_BUFFERS}

    def train(self, mode: bool = True) -> ModelStack:
        self._call.train(mode)
        return self

    def __call__(self, method: str, *args, randomness: str = "different", **kwargs):
        """``method`` of every model on its own slice of ``args`` (each batched on dim 0;
        ``kwargs`` are shared). ``randomness="different"`` gives every model its own
        random draws; ``"same"`` one draw shared by all (the tests compare it with the
        unbatched model).
        """

        def one(params, buffers, *xs):
            return functional_call(self._call, (params, buffers), (method, *xs), kwargs, strict=False)

        return vmap(one, randomness=randomness)(self.params, self.buffers, *args)

    def member(self, i: int, method: str, *args):
        """``method`` of model ``i`` alone (no vmap), e.g. its validation ELBO."""
        params = {k: v[i] for k, v in self.params.items()}
        buffers = {k: v[i] for k, v in self.buffers.items()}
        return functional_call(self._call, (params, buffers), (method, *args), strict=False)

    def optimise(self, lr: float, trainable: dict | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> ModelStack:
        """Give the stack an Adam optimiser (:func:`sparseshift.trainee.adam`) over its trained
        parameters: those named in ``trainable`` (their gradient multiplied by its value, e.g.
        to train only some rows), else every one that needs one. Returns the stack."""
        self.lr, self.trainable, self.adam_settings = lr, trainable, (eps, weight_decay)
        params = []
        for name, param in self.params.items():
            if trainable is not None:
                scale = trainable.get(name.removeprefix("model."))
                param.requires_grad_(scale is not None)
                if scale is not None:
                    param.register_hook(lambda grad, scale=scale: grad * scale)
            if param.requires_grad:
                params.append(param)
        self.optimiser = adam(params, lr, eps, weight_decay)
        return self

    def select(self, keep: list[int]) -> ModelStack:
        """The stack of models ``keep`` (positions in this stack) alone, as new leaf tensors;
        with an optimiser, the same Adam state (moments, step) for every remaining model."""
        index = torch.as_tensor(keep, device=next(iter(self.params.values())).device)
        out = copy.copy(self)
        out.params = {k: v.detach()[index].requires_grad_(v.requires_grad) for k, v in self.params.items()}
        out.buffers = {k: v[index] for k, v in self.buffers.items()}
        if self.optimiser is not None:
            out.optimise(self.lr, self.trainable, *self.adam_settings)
            for name, param in self.params.items():
                if param in self.optimiser.state:
                    moments = self.optimiser.state[param].items()
                    kept = {k: v[index] if v.dim() else v.clone() for k, v in moments}
                    out.optimiser.state[out.params[name]] = kept
        return out

    def weights(self, i: int) -> dict[str, torch.Tensor]:
        """The parameters of model ``i`` of the stack (copies)."""
        return {k: v[i].detach().clone() for k, v in self.params.items()}

    @torch.no_grad()
    def write(self, model: SparseShiftVAE, weights: dict[str, torch.Tensor]) -> None:
        """Copy one model's stacked parameters (:meth:`weights`) into ``model``."""
        for name, param in model.named_parameters():
            param.copy_(weights[f"model.{name}"])

    def loss(self, x: torch.Tensor, labels: torch.Tensor, kl_weight: float, n_obs: int):
        """Every model's loss on its own minibatch (different random draws)."""
        return self("loss", x, labels, kl_weight=kl_weight, n_obs=n_obs)

    def finite(self) -> torch.Tensor:
        """Whether each model's parameters are all finite, shape (N,)."""
        finite = [torch.isfinite(p.reshape(len(p), -1)).all(1) for p in self.params.values()]
        return torch.stack(finite).all(0)

    def state(self) -> dict:
        params = {k: v.detach() for k, v in self.params.items()}
        return {"params": params, "optimiser": self.optimiser.state_dict()}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        for name, param in self.params.items():
            param.copy_(state["params"][name])
        self.optimiser.load_state_dict(state["optimiser"])


def fit_many(
    models: list[SparseShiftVAE],
    xs: list[torch.Tensor],
    labels: list[torch.Tensor],
    train_idx: list[np.ndarray],
    val_idx: list[np.ndarray],
    cfg: TrainConfig,
    seeds: list[int] | None = None,
    checkpoint: str | os.PathLike | None = None,
    trainable: dict[str, torch.Tensor] | None = None,
) -> list[pd.DataFrame]:
    """Train ``models`` together, each on its own ``xs[i][train_idx[i]]``; return their histories.

    The models must share one :class:`ModelConfig` up to the method and the swept weights
    (``PER_MODEL``; several methods train with a :class:`MixedPrior`) and their datasets one shape (same number of cells, of training and of validation cells);
    models on the same data may pass the same tensor, which is then held once. ``seeds[i]``
    (default ``cfg.seed + i``) orders model i's minibatches; the random draws of the models
    come from the global generator, seeded with ``cfg.seed``. Same seeds, same numbers.

    ``cfg.patience`` stops each model as :func:`sparseshift.train.fit` does: a model whose
    validation ELBO has not improved for ``patience`` epochs after warm-up leaves the stack
    with its best weights, and the others train on without it. ``trainable`` (parameter
    name -> gradient multiplier) trains those parameters only (step 3 of the transfer).
    The models are trained in place and left in evaluation mode. When ``checkpoint`` is
    given, the stack's state (weights, optimiser, random generators, histories, stopped
    models) is saved there every ``cfg.checkpoint_every`` epochs before the last and a later call
    resumes from it.
    """
    n = len(models)
    if not (len(xs) == len(labels) == len(train_idx) == len(val_idx) == n):
        raise ValueError("fit_many: models, xs, labels, train_idx and val_idx must have one entry per model")
    if len({x.shape for x in xs}) > 1 or len({len(t) for t in train_idx}) > 1 or len({len(v) for v in val_idx}) > 1:
        raise ValueError("fit_many: every model's data must have the same shape and split sizes")
    seeds = [cfg.seed + i for i in range(n)] if seeds is None else list(seeds)
    torch.manual_seed(cfg.seed)
    data = TrainingData(xs, labels, train_idx, val_idx)
    return train_models(models, data, cfg, seeds,
                        lambda ms: ModelStack(ms).optimise(cfg.lr, trainable, cfg.adam_eps, cfg.weight_decay),
                        checkpoint)
