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

:func:`fit_many` is the training loop of :func:`sparseshift.train.fit` for a stack,
resumable from a checkpoint, without early stopping; ``python -m sparseshift.benchmark
--models N`` measures it.
"""

from __future__ import annotations

import copy
import logging
import operator
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .io import CONSOLE, atomic_path
from .model import SparseShiftVAE
from .train import (
    HISTORY_COLUMNS, TrainConfig, check_epoch, epoch_parts, kl_weight_at, restore_rng_state, rng_state,
)

log = logging.getLogger(__name__)

# The same for every model of a stack and read as a Python bool by the prior:
# kept out of the batched buffers (vmap cannot branch on a batched tensor).
_SHARED_BUFFERS = ("prior.mask_frozen",)


class _Call(nn.Module):
    """Calls any method of the wrapped model, so ``functional_call`` can swap its tensors."""

    def __init__(self, model: SparseShiftVAE):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args, **kwargs):
        return operator.attrgetter(method)(self.model)(*args, **kwargs)


class ModelStack:
    """N models of one configuration as stacked tensors (leading dimension: the model)."""

    def __init__(self, models: list[SparseShiftVAE]):
        if not models:
            raise ValueError("ModelStack needs at least one model")
        first = models[0].cfg.to_dict()
        for i, model in enumerate(models[1:], start=1):
            if model.cfg.to_dict() != first:
                raise ValueError(
                    f"ModelStack: model {i} has another configuration than model 0 "
                    "(only models of the same ModelConfig can be stacked)"
                )
        if len({bool(getattr(m.prior, "mask_frozen", False)) for m in models}) > 1:
            raise ValueError("ModelStack: some models have a frozen target mask and others not")
        if models[0].cfg.batch_norm:
            # vmap evaluates functional copies: BatchNorm's running statistics would never be
            # updated, and the trained models would normalise with their initial 0 / 1.
            raise ValueError("ModelStack: models with batch_norm cannot be stacked; train them one by one")
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

    @torch.no_grad()
    def write_back(self, models: list[SparseShiftVAE]) -> None:
        """Copy the stacked parameters into ``models`` (the ones the stack was built from)."""
        for i, model in enumerate(models):
            for name, param in model.named_parameters():
                param.copy_(self.params[f"model.{name}"][i])


def fit_many(
    models: list[SparseShiftVAE],
    xs: list[torch.Tensor],
    labels: list[torch.Tensor],
    train_idx: list[np.ndarray],
    val_idx: list[np.ndarray],
    cfg: TrainConfig,
    seeds: list[int] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> list[pd.DataFrame]:
    """Train ``models`` together, each on its own ``xs[i][train_idx[i]]``; return their histories.

    The models must share one :class:`ModelConfig` and their datasets one shape
    (same number of cells, of training and of validation cells). ``seeds[i]`` (default
    ``cfg.seed + i``) orders model i's minibatches; the random draws of the models come
    from the global generator, seeded with ``cfg.seed``. Same seeds, same numbers.
    The models are trained in place and left in evaluation mode. When ``checkpoint`` is
    given, the stack's state (weights, optimiser, random generators, histories) is saved
    there every ``cfg.checkpoint_every`` epochs and a later call resumes from it.
    """
    n = len(models)
    if not (len(xs) == len(labels) == len(train_idx) == len(val_idx) == n):
        raise ValueError("fit_many: models, xs, labels, train_idx and val_idx must have one entry per model")
    if cfg.patience is not None:
        raise ValueError("fit_many: early stopping (patience) is not supported; train such runs with fit()")
    if len({x.shape for x in xs}) > 1 or len({len(t) for t in train_idx}) > 1 or len({len(v) for v in val_idx}) > 1:
        raise ValueError("fit_many: every model's data must have the same shape and split sizes")
    device = xs[0].device
    seeds = [cfg.seed + i for i in range(n)] if seeds is None else list(seeds)
    torch.manual_seed(cfg.seed)
    stack = ModelStack(models)
    x_all, l_all = torch.stack(xs), torch.stack(labels)
    train_t = torch.stack([torch.as_tensor(t, device=device) for t in train_idx])
    vals = [(x[v], lab[v]) for x, lab, v in zip(xs, labels, val_idx)]
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    optimiser = torch.optim.Adam(list(stack.params.values()), lr=cfg.lr, fused=True)
    rows = torch.arange(n, device=device)[:, None]
    n_train = train_t.shape[1]
    histories: list[list[dict]] = [[] for _ in range(n)]
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        with torch.no_grad():
            for name, param in stack.params.items():
                param.copy_(state["params"][name])
        optimiser.load_state_dict(state["optimiser"])
        for generator, saved in zip(generators, state["generators"]):
            generator.set_state(saved)
        restore_rng_state(state["rng"], device)
        histories, start = state["histories"], state["epoch"]
        log.info("resumed %d stacked models from %s at epoch %d", n, ckpt, start, extra=CONSOLE)
    for epoch in range(start, cfg.epochs):
        stack.train()
        tic = time.perf_counter()
        kl_weight = kl_weight_at(epoch, cfg.warmup_epochs)
        perm = torch.stack(
            [t[torch.randperm(n_train, device=device, generator=g)] for t, g in zip(train_t, generators)]
        )
        sums = torch.zeros(n, 5, device=device)
        for batch in perm.split(cfg.batch_size, dim=1):
            loss, parts = stack("loss", x_all[rows, batch], l_all[rows, batch], kl_weight=kl_weight, n_obs=n_train)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()  # the models share no parameter: each gets its own gradient
            optimiser.step()
            sums += epoch_parts(loss, parts).T * batch.shape[1]
        means = (sums / n_train).tolist()  # the epoch's only host synchronisation
        seconds = time.perf_counter() - tic
        stack.train(False)
        for i in range(n):
            x_val, l_val = vals[i]
            elbo_val = float(stack.member(i, "elbo", x_val, l_val)) if len(x_val) else float("nan")
            density = stack.member(i, "prior.mask_density")
            histories[i].append(
                dict(zip(HISTORY_COLUMNS, [epoch + 1, kl_weight, *means[i], elbo_val, density, seconds / n]))
            )
        log.info("epoch %d/%d of %d stacked models: elbo_val %s", epoch + 1, cfg.epochs, n,
                 " ".join(f"{h[-1]['elbo_val']:.3f}" for h in histories))
        finite = torch.stack([torch.isfinite(p.reshape(n, -1)).all(1) for p in stack.params.values()]).all(0)
        for i, weights_finite in enumerate(finite.tolist()):
            elbo_val = histories[i][-1]["elbo_val"]
            check_epoch(means[i], elbo_val, len(vals[i][0]) > 0, weights_finite, epoch + 1, cfg.lr, member=i)
        if ckpt is not None and (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
            state = {
                "params": {k: v.detach() for k, v in stack.params.items()},
                "optimiser": optimiser.state_dict(),
                "generators": [g.get_state() for g in generators],
                "rng": rng_state(device),
                "histories": histories,
                "epoch": epoch + 1,
            }
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
    stack.write_back(models)
    for model in models:
        model.eval()
    return [pd.DataFrame(h, columns=HISTORY_COLUMNS) for h in histories]
