"""Training loop: data resident on the device, minibatches by index, resumable.

The whole count matrix of a run is moved to the device once; an epoch is a random
permutation of the training indices split into minibatches, so no per-cell Python
and no host round trip happens inside an epoch (the loss parts are accumulated on
the device and read once per epoch).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .io import CONSOLE, atomic_path
from .model import SparseShiftVAE

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


def epoch_parts(loss: torch.Tensor, parts: dict) -> torch.Tensor:
    """The minibatch means logged per epoch (loss, recon, kl, penalty, elbo), detached."""
    return torch.stack([loss, parts["recon"], parts["kl"], parts["penalty"], parts["elbo"]]).detach()


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
    ``cfg.checkpoint_every`` epochs and a later call resumes from it.
    """
    device = x.device
    train_idx_t = torch.as_tensor(train_idx, device=device)
    x_val, l_val = x[val_idx], labels[val_idx]
    n_train = len(train_idx)
    if parameters is None:
        parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=cfg.lr, fused=True)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    history: list[dict] = []
    best = {"elbo": -float("inf"), "state": None, "epoch": -1}
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        restore_rng_state(state["rng"], device)
        history, best, start = state["history"], state["best"], state["epoch"]
        log.info("resumed from %s at epoch %d", ckpt, start, extra=CONSOLE)

    for epoch in range(start, cfg.epochs):
        model.train()
        tic = time.perf_counter()
        kl_weight = kl_weight_at(epoch, cfg.warmup_epochs)
        sums = torch.zeros(5, device=device)
        perm = train_idx_t[torch.randperm(n_train, device=device, generator=generator)]
        for batch in perm.split(cfg.batch_size):
            loss, parts = model.loss(x[batch], labels[batch], kl_weight=kl_weight, n_obs=n_train)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sums += epoch_parts(loss, parts) * len(batch)
        means = (sums / n_train).tolist()  # the epoch's only host synchronisation
        seconds = time.perf_counter() - tic
        elbo_val = float(model.elbo(x_val, l_val)) if len(val_idx) else float("nan")
        row = dict(
            zip(HISTORY_COLUMNS, [epoch + 1, kl_weight, *means, elbo_val, model.prior.mask_density(), seconds])
        )
        history.append(row)
        log.info("%s", epoch_line(row, cfg.epochs))
        weights_finite = bool(torch.stack([torch.isfinite(p).all() for p in parameters]).all())
        check_epoch(means, elbo_val, len(val_idx) > 0, weights_finite, epoch + 1, cfg.lr)

        if cfg.patience is not None and epoch + 1 >= cfg.warmup_epochs and elbo_val > best["elbo"]:
            best = {"elbo": elbo_val, "state": copy.deepcopy(model.state_dict()), "epoch": epoch + 1}
        stop = (
            cfg.patience is not None
            and best["state"] is not None
            and epoch + 1 - best["epoch"] >= cfg.patience
        )
        if ckpt is not None and ((epoch + 1) % cfg.checkpoint_every == 0) and not stop:
            state = {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "generator": generator.get_state(),
                "rng": rng_state(device),
                "history": history,
                "best": best,
                "epoch": epoch + 1,
            }
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
        if stop:
            log.info("early stop at epoch %d (best validation ELBO at epoch %d)", epoch + 1, best["epoch"])
            break

    if cfg.patience is not None and best["state"] is not None:
        model.load_state_dict(best["state"])
        log.info("restored the weights of epoch %d", best["epoch"])
    model.eval()
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)
