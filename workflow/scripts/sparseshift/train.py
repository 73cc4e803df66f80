"""Training: one loop for one model and for a stack of models, data resident on the device.

:func:`train_models` is the training loop (epochs, KL warm-up, history, divergence checks,
early stopping per model, checkpoints and resuming). It trains a
:class:`sparseshift.trainee.Trainee`: the models still training seen as one, batched along a
leading dimension, on the cells of a :class:`sparseshift.trainee.TrainingData`. :func:`fit`
trains one model through :class:`sparseshift.trainee.OneModel` (any model, BatchNorm
included, or a subset of its parameters); :func:`sparseshift.batched.fit_many` trains N
models of one configuration as a :class:`sparseshift.batched.ModelStack` (vmap). This module
also holds the training settings (:class:`TrainConfig`), the divergence error
(:class:`TrainingDiverged`) and the seeding and checkpoint helpers. The dependencies go one
way: batched imports this module and :mod:`sparseshift.trainee`; trainee imports neither.

The whole count matrix of a run is moved to the device once; an epoch is a random
permutation of the training indices split into minibatches, so no per-cell Python
and no host round trip happens inside an epoch (the loss parts are accumulated on
the device and read once per epoch).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .io import CONSOLE, atomic_path
from .model import SparseShiftVAE
from .step import CapturedStep, backward, epoch_parts
from .trainee import OneModel, Trainee, TrainingData

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "kl_weight",
    "loss",
    "recon",
    "kl",
    "penalty",
    "elbo_train",
    "elbo_val",
    "mask_density",
    "train_seconds",
]


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    warmup_epochs: int = 50
    val_fraction: float = 0.1
    patience: int | None = None
    checkpoint_every: int = 10
    seed: int = 0
    # On CUDA, replay each full minibatch's step as a CUDA graph (sparseshift.step); no effect on CPU.
    cuda_graph: bool = True
    # Adam's eps and (L2) weight decay: torch's defaults; the released sVAE+ code (scvi-tools'
    # training plan) uses 0.01 and 1e-6 (issue 29 point 5, the optimiser ablation)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    # the per-cell loss multiplied by the number of training cells, as the released code does
    # for sVAE+ only (with Adam, what changes is the gradient's scale against adam_eps)
    loss_times_cells: bool = False


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss, gradient, latent or score: no model of the run
    is worth saving.

    ``what`` names the quantity, ``epoch`` the (1-based) epoch in which it was first seen
    (None outside the epochs), ``lr`` the learning rate, ``member`` the model of a stack
    (:func:`sparseshift.batched.fit_many`). The callers that know them add the ``step`` (the
    transfer protocol's), the ``run`` and the config key of the learning rate with :meth:`update`.
    """

    def __init__(self, what: str, epoch: int | None, lr: float, member: int | None = None):
        self.what, self.epoch, self.lr, self.member = what, epoch, lr, member
        self.step, self.run, self.lr_key = "training", None, "train.lr"
        super().__init__(self.message())

    def update(self, **attrs) -> TrainingDiverged:
        """Set ``step``, ``run`` or ``lr_key`` and rewrite the message."""
        for key, value in attrs.items():
            setattr(self, key, value)
        self.args = (self.message(),)
        return self

    def message(self) -> str:
        run = f"run {self.run}" if self.run else "the run"
        if self.member is not None:
            run += f" (model {self.member} of its stack)"
        when = f" in epoch {self.epoch}" if self.epoch is not None else ""
        return (
            f"{self.step} of {run} diverged: the {self.what} became non-finite{when} (learning rate "
            f"{self.lr:g}); try a lower learning rate (config key {self.lr_key}, replogle.{self.lr_key} "
            "on the Replogle arm) or check the data for corrupt or extreme counts. No model of this run "
            "was written."
        )


def check_epoch(means, elbo_val: float, has_val: bool, weights_finite: bool, epoch: int, lr: float,
                member: int | None = None) -> None:
    """Raise :class:`TrainingDiverged` for the first non-finite of an epoch's loss parts, its
    weights (a non-finite gradient leaves them non-finite) and its validation ELBO (when there
    are validation cells)."""
    for what, finite in (
        ("training loss", all(math.isfinite(v) for v in means)),
        ("gradient", weights_finite),
        ("validation ELBO", not has_val or math.isfinite(elbo_val)),
    ):
        if not finite:
            raise TrainingDiverged(what, epoch, lr, member)


def epoch_line(row: dict, epochs: int) -> str:
    """The log line of one epoch; the mask density only for models with a mask."""
    line = (
        f"epoch {row['epoch']}/{epochs} loss {row['loss']:.3f} elbo_train {row['elbo_train']:.3f} "
        f"elbo_val {row['elbo_val']:.3f} kl_weight {row['kl_weight']:.2f}"
    )
    if not math.isnan(row["mask_density"]):
        line += f" mask_density {row['mask_density']:.3f}"
    return line


def select_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; otherwise the named device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``n`` cells into training and validation indices."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def kl_weight_at(epoch: int, warmup_epochs: int) -> float:
    """Linear KL warm-up from 0 at epoch 0 to 1 at ``warmup_epochs``."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_models(
    models: list[SparseShiftVAE], data: TrainingData, cfg: TrainConfig, seeds: list[int],
    build: Callable[[list[SparseShiftVAE]], Trainee], checkpoint: str | os.PathLike | None = None,
    step: CapturedStep | None = None,
) -> list[pd.DataFrame]:
    """The training loop of :func:`fit` and :func:`sparseshift.batched.fit_many`: train
    ``models`` (as the :class:`Trainee` that ``build`` makes of those still training) on
    ``data``, model i's minibatches ordered by a generator seeded with ``seeds[i]``; return
    their histories.

    ``cfg.patience``: a model whose validation ELBO has not improved for ``patience`` epochs
    after warm-up stops with its best weights, the others train on; with patience, every
    model ends with its best weights. The models are trained in place and left in evaluation
    mode. With ``checkpoint``, the state (weights, optimiser, random generators, histories,
    stopped models) is saved there every ``cfg.checkpoint_every`` epochs while a model still
    trains, except after the last epoch, and a later call resumes from it.

    ``step`` trains each epoch's minibatches; by default, on CUDA with ``cfg.cuda_graph``, a
    :class:`sparseshift.step.CapturedStep` (the step replayed as a CUDA graph), else the eager
    loop below.
    """
    n, device, n_train, vals = len(models), data.device, data.n_train, data.vals
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    histories: list[list[dict]] = [[] for _ in range(n)]
    best = [{"elbo": -float("inf"), "weights": None, "epoch": -1} for _ in range(n)]
    stopped: dict[int, dict] = {}  # model -> its final weights, once it stopped
    active, start = list(range(n)), 0
    ckpt = Path(checkpoint) if checkpoint else None
    state = torch.load(ckpt, map_location=device, weights_only=False) if ckpt and ckpt.exists() else None
    if state is not None:
        histories, best, stopped, active, start = (
            state["histories"], state["best"], state["stopped"], state["active"], state["epoch"]
        )
    if step is None and device.type == "cuda" and cfg.cuda_graph:
        step = CapturedStep(cfg.batch_size)
    scale = float(n_train) if cfg.loss_times_cells else 1.0
    trainee = build([models[i] for i in active])
    stacked = trainee.stacked
    who = (lambda i: f"model {i} of the stack: ") if stacked else (lambda i: "")
    if state is not None:
        trainee.load_state(state)
        for generator, saved in zip(generators, state["generators"]):
            generator.set_state(saved)
        restore_rng_state(state["rng"], device)
        log.info("resumed %sfrom %s at epoch %d", f"{n} stacked models ({len(active)} still training) "
                 if stacked else "", ckpt, start, extra=CONSOLE)
    for epoch in range(start, cfg.epochs):
        if not active:
            break
        m = len(active)
        trainee.train()
        tic = time.perf_counter()
        kl_weight = kl_weight_at(epoch, cfg.warmup_epochs)
        batches = data.minibatches(active, generators, cfg.batch_size)
        if step is not None:  # captures anew for a new trainee (early stopping's select)
            sums = step.epoch(trainee, batches, kl_weight, n_train, scale)
        else:
            sums = torch.zeros(m, 5, device=device)
            for x, labels, size in batches:
                loss, parts = trainee.loss(x, labels, kl_weight, n_train)
                trainee.optimiser.zero_grad(set_to_none=True)
                backward(loss, scale)
                trainee.optimiser.step()
                sums += epoch_parts(loss, parts).T * size
        means = (sums / n_train).tolist()  # the epoch's only host synchronisation
        seconds = time.perf_counter() - tic
        trainee.train(False)
        finite = trainee.finite()
        for j, i in enumerate(active):
            x_val, l_val = vals[i]
            elbo_val = float(trainee.member(j, "elbo", x_val, l_val)) if len(x_val) else float("nan")
            density = trainee.member(j, "prior.mask_density")
            histories[i].append(
                dict(zip(HISTORY_COLUMNS, [epoch + 1, kl_weight, *means[j], elbo_val, density, seconds / m]))
            )
        if stacked:
            log.info("epoch %d/%d of %d stacked models: elbo_val %s", epoch + 1, cfg.epochs, m,
                     " ".join(f"{histories[i][-1]['elbo_val']:.3f}" for i in active))
        else:
            log.info("%s", epoch_line(histories[0][-1], cfg.epochs))
        leaving = []
        for j, i in enumerate(active):
            elbo_val = histories[i][-1]["elbo_val"]
            check_epoch(means[j], elbo_val, len(vals[i][0]) > 0, bool(finite[j]), epoch + 1, cfg.lr,
                        member=i if stacked else None)
            if cfg.patience is None:
                continue
            if epoch + 1 >= cfg.warmup_epochs and elbo_val > best[i]["elbo"]:
                best[i] = {"elbo": elbo_val, "weights": trainee.weights(j), "epoch": epoch + 1}
            if best[i]["weights"] is not None and epoch + 1 - best[i]["epoch"] >= cfg.patience:
                leaving.append(j)
        for j in leaving:
            i = active[j]
            stopped[i] = best[i]["weights"]
            log.info("%searly stop at epoch %d (best validation ELBO at epoch %d)", who(i), epoch + 1,
                     best[i]["epoch"])
        if leaving:
            keep = [j for j in range(m) if j not in leaving]
            active = [active[j] for j in keep]
            if active:
                trainee = trainee.select(keep)
        if ckpt is not None and active and (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
            state = {
                **trainee.state(),
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
        stopped[i] = best[i]["weights"] if best[i]["weights"] is not None else trainee.weights(j)
    for i, model in enumerate(models):
        trainee.write(model, stopped[i])
        if best[i]["weights"] is not None:
            log.info("%srestored the weights of epoch %d", who(i), best[i]["epoch"])
        model.eval()
    return [pd.DataFrame(h, columns=HISTORY_COLUMNS) for h in histories]


def fit(
    model: SparseShiftVAE,
    x: torch.Tensor,
    labels: torch.Tensor,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    checkpoint: str | os.PathLike | None = None,
    parameters: list[torch.nn.Parameter] | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place on ``x[train_idx]``; return the history.

    ``x`` and ``labels`` must already be on the model's device. ``parameters`` are
    those to optimise (default: all that require a gradient). Early stopping
    (``cfg.patience`` epochs after warm-up without a better validation ELBO)
    restores the best weights. When ``checkpoint`` is given, the full state
    (weights, optimiser, RNG, history) is saved there every
    ``cfg.checkpoint_every`` epochs before the last and a later call resumes from it.
    The minibatch order comes from a generator seeded with ``cfg.seed``; the random
    draws continue the global generator as the caller left it.
    """
    if parameters is None:
        parameters = [p for p in model.parameters() if p.requires_grad]
    return train_models([model], TrainingData([x], [labels], [train_idx], [val_idx]), cfg, [cfg.seed],
                        lambda ms: OneModel(ms[0], cfg.lr, parameters, cfg.adam_eps, cfg.weight_decay),
                        checkpoint)[0]
