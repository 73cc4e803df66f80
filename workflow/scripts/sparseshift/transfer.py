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

This module trains: steps 2 and 3 of one run or of a stack of runs (:func:`transfer_runs`,
``stacked`` saying which), and their variants. The transfer's settings
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


def refit(models: list, held: list, datas: list, train_cfgs: list[TrainConfig], cfg: TransferConfig,
          cells: list[np.ndarray], stacked: bool) -> list[pd.DataFrame]:
    """Step 3 of runs again, on copies (``models``) of their step-2 models, each on its
    ``cells``: run by run (seeded with its seed, :func:`finetune`) without ``stacked`` or when
    the runs fit unequal numbers of cells, else as one stack. The held-out rows' shifts train,
    and their mask logits when they are learned."""
    if stacked and not has_step_3(models[0], cfg):
        return [pd.DataFrame(columns=HISTORY_COLUMNS)] * len(models)
    if not stacked or len({len(c) for c in cells}) > 1:
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


def after_protocol(held: list, retrained: list, finetune_histories: list, datas: list,
                   train_cfgs: list[TrainConfig], cfg: TransferConfig, stacked: bool) -> None:
    """The step-3 variants of the runs (:func:`transfer_runs`), each from copies of the step-2
    models, after the full protocol's scores, whose numbers stay as they were: learned
    held-out masks (``cfg.learn_heldout_masks``), then the few-shot transfers, for each k."""
    if cfg.learn_heldout_masks and has_step_3(retrained[0], cfg):
        models = [copy.deepcopy(m) for m in retrained]
        if all([m.learn_heldout_masks(h.held_out) for m, h in zip(models, held)]):
            try:
                cells = [d.heldout_cells for d in datas]
                histories = refit(models, held, datas, train_cfgs, cfg, cells, stacked)
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
            histories = refit(models, held, datas, train_cfgs, cfg, [h.splits[k][0] for h in held], stacked)
        except TrainingDiverged as err:
            raise err.update(step=f"step 3 of the few-shot transfer (k = {k})", lr_key="transfer.finetune_lr")
        for h, model, history, c in zip(held, models, histories, train_cfgs):
            h.few_shot_scored(k, model, history, c.lr)


def retrain_runs(models: list, held: list, datas: list, train_cfgs: list[TrainConfig], cfg: TransferConfig,
                 checkpoint, stacked: bool) -> list[pd.DataFrame]:
    """Step 2 of the runs: one model (:func:`retrain`) or a stack (early stopping per run)."""
    if not stacked:
        return [retrain(models[0], datas[0], train_cfgs[0], cfg, checkpoint)]
    return fit_many(models, [d.x for d in datas], [d.labels for d in datas], [d.train_cells for d in datas],
                    [d.val_cells for d in datas], retrain_config(train_cfgs[0], cfg),
                    [c.seed for c in train_cfgs], checkpoint)


def finetune_runs(models: list, held: list, datas: list, train_cfgs: list[TrainConfig],
                  cfg: TransferConfig, stacked: bool) -> tuple[list[pd.DataFrame], list[float]]:
    """Step 3 of the runs on their held-out cells: one model (:func:`finetune`, timed around
    it) or a stack (each run's time its share of the stack's); the histories and seconds."""
    if not stacked:
        tic = time.perf_counter()
        history = finetune(models[0], datas[0], held[0].held_out, train_cfgs[0], cfg)
        return [history], [time.perf_counter() - tic]
    has_shifts = [bool(model.freeze_all_but_shifts(h.held_out)) for h, model in zip(held, models)]
    if has_shifts[0]:
        histories = fit_many(models, [d.x for d in datas], [d.labels for d in datas],
                             [d.heldout_cells for d in datas], [np.array([], dtype=np.int64)] * len(models),
                             finetune_config(train_cfgs[0], cfg), [c.seed for c in train_cfgs],
                             trainable={"prior.mu": models[0].shift_rows(held[0].held_out)})
    else:
        histories = [pd.DataFrame(columns=HISTORY_COLUMNS)] * len(models)
    return histories, [float(h["train_seconds"].sum()) if len(h) else 0.0 for h in histories]


def transfer_runs(
    models: list[SparseShiftVAE], datas: list, train_cfgs: list[TrainConfig], cfg: TransferConfig,
    checkpoint=None, *, stacked: bool,
) -> list[TransferResult]:
    """Steps 2 and 3 on ``models`` (modified in place; run i: ``models[i]`` on ``datas[i]``
    with ``train_cfgs[i]``), with the held-out scores of each step and the step-3 variants.

    ``stacked`` says how, not the number of runs: False transfers one run as one model
    (:func:`sparseshift.train.fit`); True trains steps 2 and 3 of the runs as one stack
    (:func:`sparseshift.batched.fit_many`, early stopping per run in step 2; a stack of one
    included), the IWELBOs run model by model. The runs of a stack must have held-out
    perturbations of the same indices and data of one shape (the seeds of a simulation
    setting). A stacked run's random draws differ from its one-model transfer, so its numbers
    do too."""
    if not stacked and len(models) != 1:
        raise ValueError(f"transfer_runs: one model transfers one run, not {len(models)}; stack several "
                         "(stacked=True)")
    if not len(datas[0].heldout_cells):
        return [no_transfer(model, cfg) for model in models]
    held = [HeldOut(data, c.seed, cfg) for data, c in zip(datas, train_cfgs)]
    if any(not torch.equal(h.held_out, held[0].held_out) for h in held):
        raise ValueError("transfer_runs: the runs hold out different perturbations; transfer them one by one")
    seed_everything(train_cfgs[0].seed)
    for h, model in zip(held, models):
        h.before(model)
    try:
        retrain_histories = retrain_runs(models, held, datas, train_cfgs, cfg, checkpoint, stacked)
    except TrainingDiverged as err:
        raise err.update(step="step 2 of the transfer (retraining)")
    retrained = [h.retrained(model, hist) for h, model, hist in zip(held, models, retrain_histories)]
    try:
        finetune_histories, seconds = finetune_runs(models, held, datas, train_cfgs, cfg, stacked)
    except TrainingDiverged as err:
        raise err.update(step="step 3 of the transfer (fine-tuning)", lr_key="transfer.finetune_lr")
    for h, model, f_hist, s in zip(held, models, finetune_histories, seconds):
        h.finetuned(model, f_hist, s)
        h.held_out_rows("heldout", model)
    after_protocol(held, retrained, finetune_histories, datas, train_cfgs, cfg, stacked)
    return [h.result(copy_, model, r_hist, f_hist, c.lr)
            for h, model, copy_, r_hist, f_hist, c in zip(held, models, retrained, retrain_histories,
                                                          finetune_histories, train_cfgs)]
