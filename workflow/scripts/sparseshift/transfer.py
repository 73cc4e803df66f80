"""Generalisation to unseen perturbations: the transfer protocol and the held-out I-NLL.

Lopez et al. (2023), section 5, evaluate a trained model on perturbations it never saw:

1. the model trained on the training perturbations (the ``train`` rule);
2. its target mask binarised and frozen, the held-out perturbations given mask 1 and
   shift 0, then retrained on the training cells (:func:`retrain`);
3. encoder, decoder, dispersion and mask frozen; only the held-out perturbations'
   shifts fitted on the held-out cells, lr 0.005 (:func:`finetune`);

then the ELBO and the importance-weighted ELBO with T particles on the held-out cells.
Held-out combinations whose members were all trained are also scored zero-shot: the IWELBO
of step 1's model (the sum of the members' learned shifts, nothing fitted on any held-out
cell), ``inll_zero_shot`` beside ``inll_combinations`` (the same cells after step 3).
Few-shot transfer (``TransferConfig.few_shot``, issue 29 point 3): for each k, step 3 is
fitted again from step 2's model on k cells of each held-out condition only (drawn with the
run's seed, :func:`few_shot_splits`) and the IWELBO scored on that condition's other held-out
cells (``inll_few_shot_k<k>``); the full protocol above is the k = all row.
Targets of unseen perturbations (``TransferConfig.learn_heldout_masks``, issue 29 point 4):
step 3 runs again from step 2's model with the held-out perturbations' masks learned afresh
under the method's own sparsity term (sVAE's L1, sVAE+'s Beta prior) instead of set to 1, and
scored the same way (``inll_learned_masks``); the held-out rows of the target graph of both
variants are kept (:attr:`TransferResult.heldout_targets`) for their graph metrics. A prior
without masks (iVAE) has nothing more to learn: its variant is the standard step 3.
Methods are compared on I-NLL = -IWELBO per cell (lower is better). Models without
perturbation parameters (VAE, beta-VAE) go through step 2 (more training, the same
budget as the others) and have nothing to fit in step 3.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from .batched import fit_many
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


def retrain_config(train_cfg: TrainConfig, cfg: TransferConfig) -> TrainConfig:
    """Step 2's training: no KL warm-up, early stopping on the validation ELBO."""
    return replace(train_cfg, epochs=cfg.retrain_epochs, warmup_epochs=0, patience=cfg.retrain_patience)


def finetune_config(train_cfg: TrainConfig, cfg: TransferConfig) -> TrainConfig:
    """Step 3's training: its own epochs and learning rate, no warm-up, no validation."""
    return replace(train_cfg, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, warmup_epochs=0, patience=None)


def retrain(model, data, train_cfg: TrainConfig, cfg: TransferConfig, checkpoint=None):
    """Step 2 (the targets already binarised, :meth:`HeldOut.before`): train every other
    parameter on the training cells."""
    phase_cfg = retrain_config(train_cfg, cfg)
    return fit(model, data.x, data.labels, data.train_cells, data.val_cells, phase_cfg, checkpoint)


def finetune(model, data, held_out: torch.Tensor, train_cfg: TrainConfig, cfg: TransferConfig,
             cells: np.ndarray | None = None):
    """Step 3: only the held-out perturbations' shifts are fitted, on the held-out cells
    (``cells``: those of a few-shot split).

    Returns the history, empty when the model has no shifts to fit.
    """
    params = model.freeze_all_but_shifts(held_out)
    if not params:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    no_validation = np.array([], dtype=np.int64)
    cells = data.heldout_cells if cells is None else cells
    return fit(model, data.x, data.labels, cells, no_validation, finetune_config(train_cfg, cfg),
               parameters=params)


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
            per_cell["iwelbo_zero_shot"] = np.nan
            per_cell.loc[self.zero_shot, "iwelbo_zero_shot"] = iwelbo
            by_condition = per_cell.groupby("perturbation", sort=False)["iwelbo_zero_shot"].mean()
            per_pert["inll_zero_shot"] = -by_condition.reindex(per_pert.index)
            zero_shot = {
                "inll_zero_shot": float(-iwelbo.mean()),
                "inll_combinations": float(-per_cell.loc[self.zero_shot, "iwelbo_heldout"].mean()),
                "n_zero_shot_cells": int(self.zero_shot.sum()),
                "n_zero_shot_combinations": int(per_cell.loc[self.zero_shot, "perturbation"].nunique()),
            }
        few_shot = {}
        for k, fs in self.few_shot.items():
            column = f"iwelbo_few_shot_k{k}"
            per_cell[column] = np.nan
            per_cell.loc[fs["scored"], column] = fs["iwelbo"]
            by_condition = per_cell.groupby("perturbation", sort=False)[column].mean()
            per_pert[f"inll_few_shot_k{k}"] = -by_condition.reindex(per_pert.index)
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
            per_cell["iwelbo_learned_masks"] = self.learned["iwelbo"].cpu().numpy().astype(np.float64)
            by_condition = per_cell.groupby("perturbation", sort=False)["iwelbo_learned_masks"].mean()
            per_pert["inll_learned_masks"] = -by_condition.reindex(per_pert.index)
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


def no_transfer(model: SparseShiftVAE, cfg: TransferConfig) -> TransferResult:
    """A dataset without held-out cells has nothing to transfer to: the model unchanged and
    every score NaN."""
    log.warning("no held-out cells: the held-out scores are NaN")
    empty = pd.DataFrame(columns=HISTORY_COLUMNS)
    columns = ["perturbation", "n_cells", *SCORES, "inll"]
    summary = {k: float("nan") for k in [*SCORES, "inll"]}
    summary.update(n_particles=cfg.particles, n_heldout_cells=0, n_heldout_perturbations=0)
    return TransferResult(model, model, empty, empty, pd.DataFrame(columns=columns), summary)


def transfer_run(
    model: SparseShiftVAE, data, train_cfg: TrainConfig, cfg: TransferConfig, checkpoint=None
) -> TransferResult:
    """Steps 2 and 3 on ``model`` (modified in place), with the held-out scores of each step."""
    if not len(data.heldout_cells):
        return no_transfer(model, cfg)
    held = HeldOut(data, train_cfg.seed, cfg)
    seed_everything(train_cfg.seed)
    held.before(model)
    try:
        retrain_history = retrain(model, data, train_cfg, cfg, checkpoint)
    except TrainingDiverged as err:
        raise err.update(step="step 2 of the transfer (retraining)")
    retrained = held.retrained(model, retrain_history)
    tic = time.perf_counter()
    try:
        finetune_history = finetune(model, data, held.held_out, train_cfg, cfg)
    except TrainingDiverged as err:
        raise err.update(step="step 3 of the transfer (fine-tuning)", lr_key="transfer.finetune_lr")
    held.finetuned(model, finetune_history, time.perf_counter() - tic)
    held.held_out_rows("heldout", model)
    if cfg.learn_heldout_masks and has_step_3(model, cfg):  # after the full protocol, unchanged by it
        learned = copy.deepcopy(retrained)
        if learned.learn_heldout_masks(held.held_out):
            seed_everything(train_cfg.seed)
            try:
                history = finetune(learned, data, held.held_out, train_cfg, cfg)
            except TrainingDiverged as err:
                raise err.update(step="step 3 with learned held-out masks", lr_key="transfer.finetune_lr")
            held.learned_scored(learned, history, train_cfg.lr)
        else:
            held.learned_scored(None, finetune_history, train_cfg.lr)
    for k in cfg.few_shot:  # after the full protocol, whose numbers stay as they were
        few = copy.deepcopy(retrained)
        seed_everything(train_cfg.seed)
        try:
            history = finetune(few, data, held.held_out, train_cfg, cfg, cells=held.splits[k][0])
        except TrainingDiverged as err:
            raise err.update(step=f"step 3 of the few-shot transfer (k = {k})", lr_key="transfer.finetune_lr")
        held.few_shot_scored(k, few, history, train_cfg.lr)
    return held.result(retrained, model, retrain_history, finetune_history, train_cfg.lr)


def refit_stacked(models: list, held: list, datas: list, train_cfgs: list[TrainConfig], cfg: TransferConfig,
                  cells: list[np.ndarray]) -> list[pd.DataFrame]:
    """Step 3 of a stack's runs again, on copies (``models``) of their step-2 models, each on
    its ``cells``: as one stack when every run fits as many cells, else run by run. The held-out
    rows' shifts train, and their mask logits when they are learned."""
    if not has_step_3(models[0], cfg):
        return [pd.DataFrame(columns=HISTORY_COLUMNS)] * len(models)
    if len({len(c) for c in cells}) > 1:
        histories = []
        for h, model, data, c, fitted in zip(held, models, datas, train_cfgs, cells):
            seed_everything(c.seed)
            histories.append(finetune(model, data, h.held_out, c, cfg, cells=fitted))
        return histories
    for h, model in zip(held, models):
        model.freeze_all_but_shifts(h.held_out)
    rows = models[0].shift_rows(held[0].held_out)
    trainable = {"prior.mu": rows} | ({"prior.logits": rows} if getattr(models[0].prior, "learning", False) else {})
    return fit_many(models, [d.x for d in datas], [d.labels for d in datas], cells,
                    [np.array([], dtype=np.int64)] * len(models), finetune_config(train_cfgs[0], cfg),
                    [c.seed for c in train_cfgs], trainable=trainable)


def after_protocol_stacked(held: list, retrained: list, finetune_histories: list, datas: list,
                           train_cfgs: list[TrainConfig], cfg: TransferConfig) -> None:
    """The step-3 variants of a stack's runs (:func:`transfer_stacked`), each from copies of the
    step-2 models, after the full protocol's scores: learned held-out masks
    (``cfg.learn_heldout_masks``), then the few-shot transfers, for each k."""
    if cfg.learn_heldout_masks and has_step_3(retrained[0], cfg):
        models = [copy.deepcopy(m) for m in retrained]
        if all([m.learn_heldout_masks(h.held_out) for m, h in zip(models, held)]):
            try:
                histories = refit_stacked(models, held, datas, train_cfgs, cfg, [d.heldout_cells for d in datas])
            except TrainingDiverged as err:
                raise err.update(step="step 3 with learned held-out masks", lr_key="transfer.finetune_lr")
            for h, model, history, c in zip(held, models, histories, train_cfgs):
                h.learned_scored(model, history, c.lr)
        else:
            for h, history, c in zip(held, finetune_histories, train_cfgs):
                h.learned_scored(None, history, c.lr)
    for k in cfg.few_shot:
        models = [copy.deepcopy(m) for m in retrained]
        try:
            histories = refit_stacked(models, held, datas, train_cfgs, cfg, [h.splits[k][0] for h in held])
        except TrainingDiverged as err:
            raise err.update(step=f"step 3 of the few-shot transfer (k = {k})", lr_key="transfer.finetune_lr")
        for h, model, history, c in zip(held, models, histories, train_cfgs):
            h.few_shot_scored(k, model, history, c.lr)


def transfer_stacked(
    models: list[SparseShiftVAE], datas: list, train_cfgs: list[TrainConfig], cfg: TransferConfig,
    checkpoint=None,
) -> list[TransferResult]:
    """:func:`transfer_run` for several runs of one method, steps 2 and 3 trained as one
    stack (:func:`sparseshift.batched.fit_many`, early stopping per run in step 2); the
    IWELBOs run model by model. The runs must have held-out perturbations of the same
    indices and data of one shape (the seeds of a simulation setting). A run's random
    draws differ from its one-run transfer, so its numbers do too."""
    if not len(datas[0].heldout_cells):
        return [no_transfer(model, cfg) for model in models]
    held = [HeldOut(data, c.seed, cfg) for data, c in zip(datas, train_cfgs)]
    if any(not torch.equal(h.held_out, held[0].held_out) for h in held):
        raise ValueError("transfer_stacked: the runs hold out different perturbations; transfer them one by one")
    seeds = [c.seed for c in train_cfgs]
    seed_everything(seeds[0])
    for h, model in zip(held, models):
        h.before(model)
    xs, labels = [d.x for d in datas], [d.labels for d in datas]
    try:
        retrain_histories = fit_many(models, xs, labels, [d.train_cells for d in datas],
                                     [d.val_cells for d in datas], retrain_config(train_cfgs[0], cfg), seeds,
                                     checkpoint)
    except TrainingDiverged as err:
        raise err.update(step="step 2 of the transfer (retraining)")
    retrained = [h.retrained(model, hist) for h, model, hist in zip(held, models, retrain_histories)]
    has_shifts = [bool(model.freeze_all_but_shifts(h.held_out)) for h, model in zip(held, models)]
    if has_shifts[0]:
        no_validation = [np.array([], dtype=np.int64)] * len(models)
        try:
            finetune_histories = fit_many(models, xs, labels, [d.heldout_cells for d in datas], no_validation,
                                          finetune_config(train_cfgs[0], cfg), seeds,
                                          trainable={"prior.mu": models[0].shift_rows(held[0].held_out)})
        except TrainingDiverged as err:
            raise err.update(step="step 3 of the transfer (fine-tuning)", lr_key="transfer.finetune_lr")
    else:
        finetune_histories = [pd.DataFrame(columns=HISTORY_COLUMNS)] * len(models)
    for h, model, f_hist in zip(held, models, finetune_histories):
        h.finetuned(model, f_hist, float(f_hist["train_seconds"].sum()) if len(f_hist) else 0.0)
        h.held_out_rows("heldout", model)
    after_protocol_stacked(held, retrained, finetune_histories, datas, train_cfgs, cfg)
    return [h.result(copy_, model, r_hist, f_hist, c.lr)
            for h, model, copy_, r_hist, f_hist, c in zip(held, models, retrained, retrain_histories,
                                                          finetune_histories, train_cfgs)]
