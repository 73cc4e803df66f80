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
run's seed, :func:`sparseshift.heldout.few_shot_splits`) and the IWELBO scored on that
condition's other held-out cells (``inll_few_shot_k<k>``); the full protocol above is the
k = all row.
Targets of unseen perturbations (``TransferConfig.learn_heldout_masks``, issue 29 point 4):
step 3 runs again from step 2's model with the held-out perturbations' masks learned afresh
under the method's own sparsity term (sVAE's L1, sVAE+'s Beta prior) instead of set to 1, and
scored the same way (``inll_learned_masks``); the held-out rows of the target graph of both
variants are kept (:attr:`sparseshift.heldout.TransferResult.heldout_targets`) for their graph
metrics. A prior without masks (iVAE) has nothing more to learn: its variant is the standard
step 3.
Methods are compared on I-NLL = -IWELBO per cell (lower is better). Models without
perturbation parameters (VAE, beta-VAE) go through step 2 (more training, the same
budget as the others) and have nothing to fit in step 3.

This module trains: steps 2 and 3 of one run (:func:`transfer_run`) or of a stack of runs
(:func:`transfer_stacked`), and their variants. The transfer's settings
(:class:`~sparseshift.heldout.TransferConfig`), its result and the scoring of the held-out
cells after each step (:class:`~sparseshift.heldout.HeldOut`) are in :mod:`sparseshift.heldout`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from .batched import fit_many
from .heldout import SCORES, HeldOut, TransferConfig, TransferResult, has_step_3
from .model import SparseShiftVAE
from .train import HISTORY_COLUMNS, TrainConfig, TrainingDiverged, fit, seed_everything

log = logging.getLogger(__name__)


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
