"""The held-out side of the transfer (:mod:`sparseshift.transfer`): its settings, its result
and the scores of the held-out cells.

:class:`TransferConfig` holds the transfer's settings (the ``transfer`` config keys) and
:class:`TransferResult` what a transfer returns. :class:`HeldOut` holds the held-out cells of
one run and scores its model on them after each step of the protocol: the per-cell ELBO and
IWELBO (:data:`SCORES`), the zero-shot IWELBO of held-out combinations, the variant with
learned held-out masks, the few-shot transfers (their cells drawn by :func:`few_shot_splits`),
the held-out rows of the target graph; :meth:`HeldOut.result` gathers them into the
:class:`TransferResult`. The protocol's steps, which train the models, are in
:mod:`sparseshift.transfer`, which imports this module (never the reverse).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .model import SparseShiftVAE
from .train import TrainingDiverged

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
    # step 2's IWELBO of models that have a step 3 (False: NaN, one IWELBO saved per run)
    score_retrained: bool = True
    iwelbo_memory_mb: float = 64.0
    # few-shot transfer: step 3 fitted on k cells per held-out condition, scored on the others
    few_shot: list[int] = field(default_factory=list)
    # step 3 again with the held-out perturbations' masks learned under the sparsity prior
    learn_heldout_masks: bool = False

    def __post_init__(self):
        ks = [int(k) for k in self.few_shot]
        if any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"transfer.few_shot: distinct numbers of cells >= 1, not {list(self.few_shot)}")
        self.few_shot = sorted(ks)


@dataclass
class TransferResult:
    retrained: SparseShiftVAE
    finetuned: SparseShiftVAE
    retrain_history: pd.DataFrame
    finetune_history: pd.DataFrame
    per_perturbation: pd.DataFrame
    summary: dict
    # the held-out perturbations (rows) and, per step-3 variant ("heldout": masks set to 1,
    # "heldout_learned": learned), their rows of the target scores and graph; empty without
    held_out: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    heldout_targets: dict = field(default_factory=dict)


# The few-shot draw's own stream of random numbers (beside the seed's other uses).
FEW_SHOT_STREAM = 29


def few_shot_splits(heldout_cells: np.ndarray, labels: np.ndarray, seed: int,
                    ks: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The cells of each few-shot transfer: k -> (fitted, scored), sorted cell indices.

    ``labels`` are the conditions of ``heldout_cells``. The cells of each held-out condition
    (a perturbation, or a combination) are put in one random order drawn with ``seed``
    alone, the same for every method and every k: its first k cells are fitted, the others
    scored (the k-cell sets are nested). A condition with k cells or fewer is fitted on all
    of them and scores none (its few-shot I-NLL is NaN, and it counts in
    ``n_few_shot_unscored_k<k>``)."""
    rng = np.random.default_rng([FEW_SHOT_STREAM, int(seed)])
    orders = [heldout_cells[labels == c] for c in np.unique(labels)]
    orders = [cells[rng.permutation(len(cells))] for cells in orders]
    empty = np.array([], dtype=np.int64)
    return {
        k: (np.sort(np.concatenate([o[:k] for o in orders] or [empty])),
            np.sort(np.concatenate([o[k:] for o in orders] or [empty])))
        for k in ks
    }


def has_step_3(model: SparseShiftVAE, cfg: TransferConfig) -> bool:
    return model.prior.shift_parameter() is not None and cfg.finetune_epochs > 0


class HeldOut:
    """The held-out cells of one run and its model's scores on them after each step."""

    def __init__(self, data, seed: int, cfg: TransferConfig):
        self.data, self.seed, self.cfg = data, seed, cfg
        self.held_out = torch.as_tensor(data.heldout_perturbations, device=data.device)
        self.x, self.labels = data.cells(data.heldout_cells)
        self.generator = torch.Generator(device=data.device)
        self.scores: dict[str, torch.Tensor] = {}
        self.timing: dict[str, float] = {}
        self.elbos: dict[str, float] = {}
        self.zero_shot: np.ndarray | None = None  # held-out cells scored zero-shot (see before())
        labels = data.labels[data.heldout_cells].cpu().numpy()
        self.splits = few_shot_splits(data.heldout_cells, labels, seed, cfg.few_shot)
        self.few_shot: dict[int, dict] = {}
        self.targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.learned: dict | None = None

    def before(self, model: SparseShiftVAE) -> None:
        """Step 1's score (and its zero-shot IWELBO of held-out combinations of trained
        perturbations), then the targets binarised for step 2."""
        self.scores["elbo_heldout_before"] = model.elbo(self.x, self.labels, reduction="none")
        zero_shot = getattr(self.data, "zero_shot_cells", ())
        if len(zero_shot):
            self.zero_shot = np.isin(self.data.heldout_cells, zero_shot)
            x, labels = self.data.cells(zero_shot)
            self.generator.manual_seed(self.seed)
            self.zero_shot_iwelbo = model.iwelbo(x, labels, self.cfg.particles, self.generator,
                                                 self.cfg.iwelbo_memory_mb)
        model.binarize_targets(self.held_out)

    def iwelbo(self, name: str, model: SparseShiftVAE) -> None:
        self.generator.manual_seed(self.seed)  # the same draws for every method and step
        tic = time.perf_counter()
        self.scores[name] = model.iwelbo(self.x, self.labels, self.cfg.particles, self.generator,
                                         self.cfg.iwelbo_memory_mb)
        self.timing["iwelbo_seconds"] = time.perf_counter() - tic

    def retrained(self, model: SparseShiftVAE, history: pd.DataFrame) -> SparseShiftVAE:
        """Step 2's scores; returns a copy of the retrained model."""
        # the epochs' own times: a step resumed from its checkpoint counts every attempt's epochs
        self.timing["retrain_seconds"] = float(history["train_seconds"].sum())
        self.elbos = self.data.split_elbos(model, suffix="_retrained")
        self.scores["elbo_heldout_retrained"] = model.elbo(self.x, self.labels, reduction="none")
        if self.cfg.score_retrained or not has_step_3(model, self.cfg):
            self.iwelbo("iwelbo_heldout_retrained", model)
        else:  # not asked for, and not the final score
            self.scores["iwelbo_heldout_retrained"] = torch.full_like(self.scores["elbo_heldout_retrained"], math.nan)
        return copy.deepcopy(model)

    def finetuned(self, model: SparseShiftVAE, history: pd.DataFrame, seconds: float) -> None:
        """Step 3's scores (step 2's when there was nothing to fit)."""
        self.timing["finetune_seconds"] = seconds
        if len(history):
            self.scores["elbo_heldout"] = model.elbo(self.x, self.labels, reduction="none")
            self.iwelbo("iwelbo_heldout", model)
        else:  # nothing was fitted: step 3's model is step 2's
            self.scores["elbo_heldout"] = self.scores["elbo_heldout_retrained"]
            self.scores["iwelbo_heldout"] = self.scores["iwelbo_heldout_retrained"]

    def held_out_rows(self, variant: str, model: SparseShiftVAE) -> None:
        """Keep the held-out perturbations' rows of ``model``'s target scores and graph."""
        scores = model.prior.target_scores()
        if scores is not None:
            rows = self.held_out.cpu().numpy()
            self.targets[variant] = (scores.cpu().numpy()[rows], model.prior.target_graph().cpu().numpy()[rows])

    def learned_scored(self, model: SparseShiftVAE | None, history: pd.DataFrame, lr: float) -> None:
        """The step-3 variant with learned held-out masks: ``model`` scored like step 3 (None:
        the prior has no masks, the variant is step 3 itself)."""
        if model is None:
            self.learned = {"iwelbo": self.scores["iwelbo_heldout"], "epochs": int(len(history)), "density": math.nan}
            self.targets["heldout_learned"] = self.targets.get("heldout")
            return
        self.generator.manual_seed(self.seed)
        iwelbo = model.iwelbo(self.x, self.labels, self.cfg.particles, self.generator, self.cfg.iwelbo_memory_mb)
        if not torch.isfinite(iwelbo).all():
            raise TrainingDiverged("held-out score with learned masks", None, lr).update(step="the transfer")
        self.held_out_rows("heldout_learned", model)
        self.learned = {"iwelbo": iwelbo, "epochs": int(len(history)),
                        "density": float(self.targets["heldout_learned"][1].mean())}

    def few_shot_scored(self, k: int, model: SparseShiftVAE, history: pd.DataFrame, lr: float) -> None:
        """The few-shot transfer with k cells: ``model`` (fitted on ``self.splits[k][0]``)
        scored on the other held-out cells, the IWELBO's generator seeded as for the others."""
        fitted, scored = self.splits[k]
        iwelbo = np.array([], dtype=np.float64)
        if len(scored):
            self.generator.manual_seed(self.seed)
            x, labels = self.data.cells(scored)
            iwelbo = model.iwelbo(x, labels, self.cfg.particles, self.generator,
                                  self.cfg.iwelbo_memory_mb).cpu().numpy().astype(np.float64)
            if not np.isfinite(iwelbo).all():
                raise TrainingDiverged(f"few-shot (k = {k}) held-out score", None, lr).update(step="the transfer")
        self.few_shot[k] = {"fitted": fitted, "scored": np.isin(self.data.heldout_cells, scored), "iwelbo": iwelbo,
                            "epochs": int(len(history))}

    def result(self, retrained, model, retrain_history, finetune_history, lr: float) -> TransferResult:
        data = self.data
        per_cell = pd.DataFrame({k: self.scores[k].cpu().numpy().astype(np.float64) for k in SCORES})
        for name in SCORES:
            skipped = name == "iwelbo_heldout_retrained" and not self.cfg.score_retrained
            if not (skipped or np.isfinite(per_cell[name]).all()):
                raise TrainingDiverged(f"held-out score {name}", None, lr).update(step="the transfer")
        per_cell["perturbation"] = np.asarray(data.names)[data.labels[data.heldout_cells].cpu().numpy()]
        per_pert = per_cell.groupby("perturbation", sort=False).agg(
            n_cells=("perturbation", "size"), **{k: (k, "mean") for k in SCORES}
        )
        per_pert["inll"] = -per_pert["iwelbo_heldout"]
        zero_shot = {}
        if self.zero_shot is not None:
            iwelbo = self.zero_shot_iwelbo.cpu().numpy().astype(np.float64)
            if not np.isfinite(iwelbo).all():
                raise TrainingDiverged("zero-shot held-out score", None, lr).update(step="the transfer")
            _scored_column(per_cell, per_pert, "zero_shot", self.zero_shot, iwelbo)
            zero_shot = {
                "inll_zero_shot": float(-iwelbo.mean()),
                "inll_combinations": float(-per_cell.loc[self.zero_shot, "iwelbo_heldout"].mean()),
                "n_zero_shot_cells": int(self.zero_shot.sum()),
                "n_zero_shot_combinations": int(per_cell.loc[self.zero_shot, "perturbation"].nunique()),
            }
        few_shot = {}
        for k, fs in self.few_shot.items():
            column = f"iwelbo_few_shot_k{k}"
            _scored_column(per_cell, per_pert, f"few_shot_k{k}", fs["scored"], fs["iwelbo"])
            scored_per_condition = per_cell.groupby("perturbation", sort=False)[column].count()
            few_shot.update({
                f"inll_few_shot_k{k}": float(-fs["iwelbo"].mean()) if len(fs["iwelbo"]) else float("nan"),
                f"n_few_shot_cells_k{k}": int(fs["scored"].sum()),
                f"n_few_shot_fitted_k{k}": int(len(fs["fitted"])),
                f"n_few_shot_unscored_k{k}": int((scored_per_condition == 0).sum()),
                f"few_shot_epochs_run_k{k}": fs["epochs"],
            })
        learned = {}
        if self.learned is not None:
            _scored_column(per_cell, per_pert, "learned_masks", slice(None),
                           self.learned["iwelbo"].cpu().numpy().astype(np.float64))
            learned = {"inll_learned_masks": float(-per_cell["iwelbo_learned_masks"].mean()),
                       "heldout_mask_density_learned": self.learned["density"],
                       "learned_masks_epochs_run": self.learned["epochs"]}
        summary = {
            **{k: float(per_cell[k].mean()) for k in SCORES},
            "inll": float(-per_cell["iwelbo_heldout"].mean()),
            **zero_shot,
            **few_shot,
            **learned,
            **self.elbos,
            "n_particles": self.cfg.particles,
            "n_heldout_cells": int(len(data.heldout_cells)),
            "n_heldout_perturbations": int(len(self.held_out)),
            "retrain_epochs_run": int(len(retrain_history)),
            "finetune_epochs_run": int(len(finetune_history)),
            **self.timing,
        }
        log.info(
            "held-out: ELBO %.2f before, %.2f retrained, %.2f fine-tuned; I-NLL %.2f (%d particles, %.1f s)",
            summary["elbo_heldout_before"], summary["elbo_heldout_retrained"], summary["elbo_heldout"],
            summary["inll"], self.cfg.particles, summary["iwelbo_seconds"],
        )
        return TransferResult(retrained, model, retrain_history, finetune_history, per_pert.reset_index(), summary,
                              self.held_out.cpu().numpy(), {k: v for k, v in self.targets.items() if v is not None})


def _scored_column(per_cell: pd.DataFrame, per_pert: pd.DataFrame, name: str, cells, iwelbo) -> None:
    """A step-3 variant's IWELBO of the held-out ``cells`` (a mask or a slice of ``per_cell``'s
    rows; the others NaN) as ``per_cell["iwelbo_<name>"]``, and its I-NLL per condition as
    ``per_pert["inll_<name>"]``."""
    column = f"iwelbo_{name}"
    per_cell[column] = np.nan
    per_cell.loc[cells, column] = iwelbo
    by_condition = per_cell.groupby("perturbation", sort=False)[column].mean()
    per_pert[f"inll_{name}"] = -by_condition.reindex(per_pert.index)
