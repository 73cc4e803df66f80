"""Generalisation to unseen perturbations: the transfer protocol and the held-out I-NLL.

Lopez et al. (2023), section 5, evaluate a trained model on perturbations it never saw:

1. the model trained on the training perturbations (the ``train`` rule);
2. its target mask binarised and frozen, the held-out perturbations given mask 1 and
   shift 0, then retrained on the training cells (:func:`retrain`);
3. encoder, decoder, dispersion and mask frozen; only the held-out perturbations'
   shifts fitted on the held-out cells, lr 0.005 (:func:`finetune`);

then the ELBO and the importance-weighted ELBO with T particles on the held-out cells.
Methods are compared on I-NLL = -IWELBO per cell (lower is better). Models without
perturbation parameters (VAE, beta-VAE) go through step 2 (more training, the same
budget as the others) and have nothing to fit in step 3.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .model import SparseShiftVAE
from .train import HISTORY_COLUMNS, TrainConfig, TrainingDiverged, fit, seed_everything

log = logging.getLogger(__name__)

# Per-cell scores, in protocol order: after step 1, after step 2, after step 3.
SCORES = [
    "elbo_heldout_before",
    "elbo_heldout_retrained",
    "iwelbo_heldout_retrained",
    "elbo_heldout",
    "iwelbo_heldout",
]


@dataclass
class TransferConfig:
    retrain_epochs: int = 300
    retrain_patience: int | None = 45
    finetune_epochs: int = 300
    finetune_lr: float = 0.005
    particles: int = 5000
    iwelbo_memory_mb: float = 64.0


@dataclass
class TransferResult:
    retrained: SparseShiftVAE
    finetuned: SparseShiftVAE
    retrain_history: pd.DataFrame
    finetune_history: pd.DataFrame
    per_perturbation: pd.DataFrame
    summary: dict


def retrain(model, data, held_out: torch.Tensor, train_cfg: TrainConfig, cfg: TransferConfig, checkpoint=None):
    """Step 2: binarise the targets, then train every other parameter on the training cells
    (no KL warm-up, early stopping on the validation ELBO)."""
    model.binarize_targets(held_out)
    phase_cfg = replace(train_cfg, epochs=cfg.retrain_epochs, warmup_epochs=0, patience=cfg.retrain_patience)
    return fit(model, data.x, data.labels, data.train_cells, data.val_cells, phase_cfg, checkpoint)


def finetune(model, data, held_out: torch.Tensor, train_cfg: TrainConfig, cfg: TransferConfig):
    """Step 3: only the held-out perturbations' shifts are fitted, on the held-out cells.

    Returns the history, empty when the model has no shifts to fit.
    """
    params = model.freeze_all_but_shifts(held_out)
    if not params:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    phase_cfg = replace(train_cfg, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, warmup_epochs=0, patience=None)
    no_validation = np.array([], dtype=np.int64)
    return fit(model, data.x, data.labels, data.heldout_cells, no_validation, phase_cfg, parameters=params)


def transfer_run(
    model: SparseShiftVAE, data, train_cfg: TrainConfig, cfg: TransferConfig, checkpoint=None
) -> TransferResult:
    """Steps 2 and 3 on ``model`` (modified in place), with the held-out scores of each step.

    A dataset without held-out cells has nothing to transfer to: the model is returned
    unchanged and every score is NaN.
    """
    if not len(data.heldout_cells):
        log.warning("no held-out cells: the held-out scores are NaN")
        empty = pd.DataFrame(columns=HISTORY_COLUMNS)
        columns = ["perturbation", "n_cells", *SCORES, "inll"]
        summary = {k: float("nan") for k in [*SCORES, "inll"]}
        summary.update(n_particles=cfg.particles, n_heldout_cells=0, n_heldout_perturbations=0)
        return TransferResult(model, model, empty, empty, pd.DataFrame(columns=columns), summary)
    held_out = torch.as_tensor(data.heldout_perturbations, device=data.device)
    x_h, l_h = data.cells(data.heldout_cells)
    generator = torch.Generator(device=data.device)
    seed_everything(train_cfg.seed)
    scores: dict[str, torch.Tensor] = {}
    timing: dict[str, float] = {}

    def iwelbo(name):
        generator.manual_seed(train_cfg.seed)  # the same draws for every method and step
        tic = time.perf_counter()
        scores[name] = model.iwelbo(x_h, l_h, cfg.particles, generator, cfg.iwelbo_memory_mb)
        timing["iwelbo_seconds"] = time.perf_counter() - tic

    scores["elbo_heldout_before"] = model.elbo(x_h, l_h, reduction="none")

    try:
        retrain_history = retrain(model, data, held_out, train_cfg, cfg, checkpoint)
    except TrainingDiverged as err:
        raise err.update(step="step 2 of the transfer (retraining)")
    # the epochs' own times: a step resumed from its checkpoint counts every attempt's epochs
    timing["retrain_seconds"] = float(retrain_history["train_seconds"].sum())
    elbos = data.split_elbos(model, suffix="_retrained")
    scores["elbo_heldout_retrained"] = model.elbo(x_h, l_h, reduction="none")
    iwelbo("iwelbo_heldout_retrained")
    retrained = copy.deepcopy(model)

    tic = time.perf_counter()
    try:
        finetune_history = finetune(model, data, held_out, train_cfg, cfg)
    except TrainingDiverged as err:
        raise err.update(step="step 3 of the transfer (fine-tuning)", lr_key="transfer.finetune_lr")
    timing["finetune_seconds"] = time.perf_counter() - tic
    if len(finetune_history):
        scores["elbo_heldout"] = model.elbo(x_h, l_h, reduction="none")
        iwelbo("iwelbo_heldout")
    else:  # nothing was fitted: step 3's model is step 2's
        scores["elbo_heldout"] = scores["elbo_heldout_retrained"]
        scores["iwelbo_heldout"] = scores["iwelbo_heldout_retrained"]

    per_cell = pd.DataFrame({k: scores[k].cpu().numpy().astype(np.float64) for k in SCORES})
    for name in SCORES:
        if not np.isfinite(per_cell[name]).all():
            raise TrainingDiverged(f"held-out score {name}", None, train_cfg.lr).update(step="the transfer")
    per_cell["perturbation"] = np.asarray(data.names)[data.labels[data.heldout_cells].cpu().numpy()]
    per_pert = per_cell.groupby("perturbation", sort=False).agg(
        n_cells=("perturbation", "size"), **{k: (k, "mean") for k in SCORES}
    )
    per_pert["inll"] = -per_pert["iwelbo_heldout"]
    summary = {
        **{k: float(per_cell[k].mean()) for k in SCORES},
        "inll": float(-per_cell["iwelbo_heldout"].mean()),
        **elbos,
        "n_particles": cfg.particles,
        "n_heldout_cells": int(len(data.heldout_cells)),
        "n_heldout_perturbations": int(len(held_out)),
        "retrain_epochs_run": int(len(retrain_history)),
        "finetune_epochs_run": int(len(finetune_history)),
        **timing,
    }
    log.info(
        "held-out: ELBO %.2f before, %.2f retrained, %.2f fine-tuned; I-NLL %.2f (%d particles, %.1f s)",
        summary["elbo_heldout_before"], summary["elbo_heldout_retrained"], summary["elbo_heldout"],
        summary["inll"], cfg.particles, summary["iwelbo_seconds"],
    )
    return TransferResult(
        retrained, model, retrain_history, finetune_history, per_pert.reset_index(), summary
    )
