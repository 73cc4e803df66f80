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
resumable from a checkpoint, without early stopping; ``python benchmarks/train.py
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
from .model import PER_MODEL, SparseShiftVAE
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
        first = models[0].cfg.stack_key()
        for i, model in enumerate(models[1:], start=1):
            if model.cfg.stack_key() != first:
                raise ValueError(
                    f"ModelStack: model {i} has another configuration than model 0 (only models "
                    f"of one ModelConfig, up to the swept {', '.join(PER_MODEL)}, can be stacked)"
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

    def select(self, keep: list[int]) -> ModelStack:
        """The stack of models ``keep`` (positions in this stack) alone, as new leaf tensors."""
        index = torch.as_tensor(keep, device=next(iter(self.params.values())).device)
        out = copy.copy(self)
        out.params = {k: v.detach()[index].requires_grad_(v.requires_grad) for k, v in self.params.items()}
        out.buffers = {k: v[index] for k, v in self.buffers.items()}
        return out

    def weights(self, i: int) -> dict[str, torch.Tensor]:
        """The parameters of model ``i`` of the stack (copies)."""
        return {k: v[i].detach().clone() for k, v in self.params.items()}


@torch.no_grad()
def load_weights(model: SparseShiftVAE, weights: dict[str, torch.Tensor]) -> None:
    """Copy one model's stacked parameters (:meth:`ModelStack.weights`) into ``model``."""
    for name, param in model.named_parameters():
        param.copy_(weights[f"model.{name}"])


def _optimiser(stack: ModelStack, lr: float, trainable: dict | None) -> torch.optim.Adam:
    """Adam over the stack's trained parameters: those named in ``trainable`` (their gradient
    multiplied by its value, e.g. to train only some rows), else every one that needs one."""
    params = []
    for name, param in stack.params.items():
        if trainable is not None:
            scale = trainable.get(name.removeprefix("model."))
            param.requires_grad_(scale is not None)
            if scale is not None:
                param.register_hook(lambda grad, scale=scale: grad * scale)
        if param.requires_grad:
            params.append(param)
    return torch.optim.Adam(params, lr=lr, fused=True)


def _drop(stack, optimiser, keep, lr, trainable):
    """The stack and optimiser of the models at positions ``keep`` only: the same Adam
    state (moments, step) for every remaining model, the stopped ones' removed."""
    index = torch.as_tensor(keep, device=next(iter(stack.params.values())).device)
    smaller = stack.select(keep)
    new = _optimiser(smaller, lr, trainable)
    for name, param in stack.params.items():
        if param in optimiser.state:
            new.state[smaller.params[name]] = {
                k: (v[index] if v.dim() else v.clone()) for k, v in optimiser.state[param].items()
            }
    return smaller, new


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

    The models must share one :class:`ModelConfig` up to the swept weights (``PER_MODEL``)
    and their datasets one shape (same number of cells, of training and of validation cells);
    models on the same data may pass the same tensor, which is then held once. ``seeds[i]``
    (default ``cfg.seed + i``) orders model i's minibatches; the random draws of the models
    come from the global generator, seeded with ``cfg.seed``. Same seeds, same numbers.

    ``cfg.patience`` stops each model as :func:`sparseshift.train.fit` does: a model whose
    validation ELBO has not improved for ``patience`` epochs after warm-up leaves the stack
    with its best weights, and the others train on without it. ``trainable`` (parameter
    name -> gradient multiplier) trains those parameters only (step 3 of the transfer).
    The models are trained in place and left in evaluation mode. When ``checkpoint`` is
    given, the stack's state (weights, optimiser, random generators, histories, stopped
    models) is saved there every ``cfg.checkpoint_every`` epochs and a later call resumes from it.
    """
    n = len(models)
    if not (len(xs) == len(labels) == len(train_idx) == len(val_idx) == n):
        raise ValueError("fit_many: models, xs, labels, train_idx and val_idx must have one entry per model")
    if len({x.shape for x in xs}) > 1 or len({len(t) for t in train_idx}) > 1 or len({len(v) for v in val_idx}) > 1:
        raise ValueError("fit_many: every model's data must have the same shape and split sizes")
    device = xs[0].device
    seeds = [cfg.seed + i for i in range(n)] if seeds is None else list(seeds)
    torch.manual_seed(cfg.seed)
    # each distinct dataset once on the device; model i reads dataset source[i]
    distinct: dict[tuple[int, int], int] = {}
    source = [distinct.setdefault((id(x), id(lab)), len(distinct)) for x, lab in zip(xs, labels)]
    x_all = torch.stack([xs[source.index(j)] for j in range(len(distinct))])
    l_all = torch.stack([labels[source.index(j)] for j in range(len(distinct))])
    source_t = torch.as_tensor(source, device=device)
    train_t = torch.stack([torch.as_tensor(t, device=device) for t in train_idx])
    vals = [(x[v], lab[v]) for x, lab, v in zip(xs, labels, val_idx)]
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    n_train = train_t.shape[1]
    histories: list[list[dict]] = [[] for _ in range(n)]
    best = [{"elbo": -float("inf"), "weights": None, "epoch": -1} for _ in range(n)]
    stopped: dict[int, dict] = {}  # model -> its final weights, once it left the stack
    active, start = list(range(n)), 0
    ckpt = Path(checkpoint) if checkpoint else None
    state = torch.load(ckpt, map_location=device, weights_only=False) if ckpt and ckpt.exists() else None
    if state is not None:
        histories, best, stopped, active, start = (
            state["histories"], state["best"], state["stopped"], state["active"], state["epoch"]
        )
    stack = ModelStack([models[i] for i in active])
    optimiser = _optimiser(stack, cfg.lr, trainable)
    if state is not None:
        with torch.no_grad():
            for name, param in stack.params.items():
                param.copy_(state["params"][name])
        optimiser.load_state_dict(state["optimiser"])
        for generator, saved in zip(generators, state["generators"]):
            generator.set_state(saved)
        restore_rng_state(state["rng"], device)
        log.info("resumed %d stacked models (%d still training) from %s at epoch %d", n, len(active), ckpt,
                 start, extra=CONSOLE)
    for epoch in range(start, cfg.epochs):
        if not active:
            break
        m = len(active)
        stack.train()
        tic = time.perf_counter()
        kl_weight = kl_weight_at(epoch, cfg.warmup_epochs)
        perm = torch.stack(
            [train_t[i][torch.randperm(n_train, device=device, generator=generators[i])] for i in active]
        )
        rows = source_t[active][:, None]
        sums = torch.zeros(m, 5, device=device)
        for batch in perm.split(cfg.batch_size, dim=1):
            loss, parts = stack("loss", x_all[rows, batch], l_all[rows, batch], kl_weight=kl_weight, n_obs=n_train)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()  # the models share no parameter: each gets its own gradient
            optimiser.step()
            sums += epoch_parts(loss, parts).T * batch.shape[1]
        means = (sums / n_train).tolist()  # the epoch's only host synchronisation
        seconds = time.perf_counter() - tic
        stack.train(False)
        finite = torch.stack([torch.isfinite(p.reshape(m, -1)).all(1) for p in stack.params.values()]).all(0)
        leaving = []
        for j, i in enumerate(active):
            x_val, l_val = vals[i]
            elbo_val = float(stack.member(j, "elbo", x_val, l_val)) if len(x_val) else float("nan")
            density = stack.member(j, "prior.mask_density")
            histories[i].append(
                dict(zip(HISTORY_COLUMNS, [epoch + 1, kl_weight, *means[j], elbo_val, density, seconds / m]))
            )
            check_epoch(means[j], elbo_val, len(x_val) > 0, bool(finite[j]), epoch + 1, cfg.lr, member=i)
            if cfg.patience is None:
                continue
            if epoch + 1 >= cfg.warmup_epochs and elbo_val > best[i]["elbo"]:
                best[i] = {"elbo": elbo_val, "weights": stack.weights(j), "epoch": epoch + 1}
            if best[i]["weights"] is not None and epoch + 1 - best[i]["epoch"] >= cfg.patience:
                leaving.append(j)
        log.info("epoch %d/%d of %d stacked models: elbo_val %s", epoch + 1, cfg.epochs, m,
                 " ".join(f"{histories[i][-1]['elbo_val']:.3f}" for i in active))
        if leaving:
            for j in leaving:
                i = active[j]
                stopped[i] = best[i]["weights"]
                log.info("model %d of the stack: early stop at epoch %d (best validation ELBO at epoch %d)",
                         i, epoch + 1, best[i]["epoch"])
            keep = [j for j in range(m) if j not in leaving]
            active = [active[j] for j in keep]
            if active:
                stack, optimiser = _drop(stack, optimiser, keep, cfg.lr, trainable)
        if ckpt is not None and active and (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
            state = {
                "params": {k: v.detach() for k, v in stack.params.items()},
                "optimiser": optimiser.state_dict(),
                "generators": [g.get_state() for g in generators],
                "rng": rng_state(device),
                "histories": histories,
                "best": best,
                "stopped": stopped,
                "active": active,
                "epoch": epoch + 1,
            }
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
    for j, i in enumerate(active):  # trained to the last epoch: its best weights with early stopping
        stopped[i] = best[i]["weights"] if best[i]["weights"] is not None else stack.weights(j)
    for i, model in enumerate(models):
        load_weights(model, stopped[i])
        model.eval()
    return [pd.DataFrame(h, columns=HISTORY_COLUMNS) for h in histories]
