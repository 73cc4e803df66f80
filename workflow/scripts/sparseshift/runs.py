"""One run: train it (alone or in a stack with others), evaluate it, write it.

The functions here work on AnnData and tensors; :mod:`sparseshift.jobs` reads and writes the
files of the rules around them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import io, metrics
from .batched import fit_many
from .data import (RunData, condition_members, dataset_perturbations, perturbation_labels,
                   trained_perturbations, training_cells)
from .model import ModelConfig, SparseShiftVAE
from .train import TrainConfig, TrainingDiverged, fit, seed_everything, select_device

log = logging.getLogger(__name__)


def new_run(
    adata, model_cfg: ModelConfig, train_cfg: TrainConfig, dev: torch.device, path: str = "<dataset>",
    data: RunData | None = None,
) -> tuple[RunData, SparseShiftVAE]:
    """A run's data on ``dev`` (``data`` when given: another run's of the same dataset and
    seed) and its freshly initialised model (seeded by ``train_cfg.seed``)."""
    data = data or RunData(adata, train_cfg.val_fraction, train_cfg.seed, dev, path)
    seed_everything(train_cfg.seed)
    model = SparseShiftVAE(model_cfg).to(dev)
    log.info(
        "training %s on %s: %d training / %d validation cells, %d genes, device %s",
        model_cfg.method, path, len(data.train_cells), len(data.val_cells), adata.n_vars, dev,
    )
    model.standardize_inputs(data.x[data.train_cells])
    return data, model


def finish_run(model: SparseShiftVAE, history: pd.DataFrame, data: RunData, lr: float) -> tuple[np.ndarray, dict]:
    """Latent means of every cell and the timing and ELBOs of a trained run. The training time
    is the sum over the history's epochs, so that a run resumed from its checkpoint counts the
    epochs of every attempt."""
    latents = model.latent_means(data.x).cpu().numpy()
    if not np.isfinite(latents).all():
        raise TrainingDiverged("latent means", len(history), lr)
    seconds = float(history["train_seconds"].sum())
    info = {
        "code_version": io.code_version(),
        "device": str(data.device),
        "train_seconds": seconds,
        "epochs_run": int(len(history)),
        "seconds_per_epoch": seconds / max(1, len(history)),
        **data.split_elbos(model),
    }
    return latents, info


def train_runs(
    adatas: list,
    model_cfgs: list[ModelConfig],
    train_cfgs: list[TrainConfig],
    device: str = "auto",
    checkpoint: str | Path | None = None,
    paths: list[str] | None = None,
    *,
    stacked: bool,
) -> list[tuple[SparseShiftVAE, pd.DataFrame, np.ndarray, dict]]:
    """Train runs on their ``train`` split (run i: ``adatas[i]``, ``model_cfgs[i]``,
    ``train_cfgs[i]``); return each run's model, history, latent means of every cell and
    timing information.

    ``stacked`` says how, not the number of runs: False trains one run as one model
    (:func:`sparseshift.train.fit`; the one-model jobs, and BatchNorm models, which cannot be
    stacked); True trains the runs together as one batched model
    (:func:`sparseshift.batched.fit_many`; the stacked jobs, a stack of one included): the
    seeds, settings and replicates of a method. The runs of a stack may differ in their seed
    and in the swept weights (beta, lambda, alpha) only. Each run starts from the same initial
    weights and validation split either way; its random draws differ, so a stacked run's
    numbers are not those of its one-model training. ``train_seconds`` of a stacked run is the
    stack's time divided by its size. A model of the stack that diverges stops them all
    (:class:`TrainingDiverged` names it).
    """
    if not stacked and len(adatas) != 1:
        raise ValueError(f"train_runs: one model trains one run, not {len(adatas)}; stack several "
                         "(stacked=True)")
    seeds = [c.seed for c in train_cfgs]
    if any(replace(c, seed=0) != replace(train_cfgs[0], seed=0) for c in train_cfgs):
        raise ValueError("train_runs: the runs of a stack must share their training settings but the seed")
    dev = select_device(device)
    paths = paths or ["<dataset>"] * len(adatas)
    shared: dict = {}  # (dataset, seed) -> RunData: the settings of one seed share its tensors
    runs = []
    for adata, model_cfg, train_cfg, path in zip(adatas, model_cfgs, train_cfgs, paths):
        data, model = new_run(adata, model_cfg, train_cfg, dev, path, shared.get((id(adata), train_cfg.seed)))
        shared[(id(adata), train_cfg.seed)] = data
        runs.append((data, model))
    if stacked:
        histories = fit_many(
            [model for _, model in runs], [d.x for d, _ in runs], [d.labels for d, _ in runs],
            [d.train_cells for d, _ in runs], [d.val_cells for d, _ in runs], train_cfgs[0], seeds,
            checkpoint,
        )
    else:
        (data, model), = runs
        histories = [fit(model, data.x, data.labels, data.train_cells, data.val_cells, train_cfgs[0],
                         checkpoint)]
    out = []
    for i, ((data, model), history) in enumerate(zip(runs, histories)):
        try:
            latents, info = finish_run(model, history, data, train_cfgs[i].lr)
        except TrainingDiverged as err:
            raise err.update(member=i) if stacked else err
        out.append((model, history, latents, {**info, "stacked_models": len(runs)} if stacked else info))
    return out


def evaluate_run(adata, model: SparseShiftVAE, latents: np.ndarray) -> dict:
    """Disentanglement (MCC, R²) and target identification (precision, recall, F1, AUPRC).

    The ELBOs come from the training job (``train_info.json``). Latent metrics use the
    cells of training perturbations. Graph metrics (for priors that learn a target
    graph) compare the learned graph with the truth in three conventions:

    The graph is over the single perturbations (a combination's targets are its members').

    * ``graph_*``: latents matched by |Pearson correlation| (the MCC matching), on the
      training perturbations (held-out ones have no learned mask in this phase);
    * ``graph_*_all``: the same matching, on all perturbations, held-out ones counting
      as misses;
    * ``graph_*_signed``: latents matched by the *signed* Pearson correlation, on all
      perturbations with held-out ones as misses: the released sVAE+ code's
      convention, the one the paper's Table 1 numbers are comparable to;
    * ``graph_*_zero_shot`` (datasets with held-out combinations of trained perturbations):
      the predicted targets of those combinations, the union of their members' learned
      rows, against the union of their true targets (the MCC matching).
    """
    train = training_cells(adata)
    out: dict = {"mask_density": model.prior.mask_density()}
    if "z_true" not in adata.obsm:
        return out
    z_true = np.asarray(adata.obsm["z_true"])[train]
    z_hat = latents[train]
    out["mcc_pearson"], rows, cols = metrics.match_latents(z_true, z_hat, "pearson")
    out["mcc_spearman"] = metrics.mcc(z_true, z_hat, "spearman")
    out["r2"] = metrics.r2_linear(z_true, z_hat)
    if model.prior.target_scores() is None or "targets" not in adata.uns:
        return out
    _, rows_signed, cols_signed = metrics.match_latents(z_true, z_hat, "pearson", signed=True)
    g_true = np.asarray(adata.uns["targets"]).astype(bool)
    scores = model.prior.target_scores().cpu().numpy()
    graph = model.prior.target_graph().cpu().numpy().astype(bool)
    train_perts = trained_perturbations(adata)  # the single perturbations of training cells
    # Held-out perturbations were never trained: their learned rows count as empty.
    graph_all = np.zeros_like(graph)
    graph_all[train_perts] = graph[train_perts]
    scores_all = np.zeros_like(scores)
    scores_all[train_perts] = scores[train_perts]
    for suffix, sel, g, s, (r, c) in (
        ("", train_perts, graph, scores, (rows, cols)),
        ("_all", slice(None), graph_all, scores_all, (rows, cols)),
        ("_signed", slice(None), graph_all, scores_all, (rows_signed, cols_signed)),
    ):
        res = metrics.graph_metrics(g_true[sel], s[sel], r, c, learned_binary=g[sel])
        out.update({k + suffix: v for k, v in res.items()})
    zero_shot = zero_shot_combinations(adata, train_perts)
    if zero_shot:
        # the predicted targets of held-out combinations of trained perturbations: the union of
        # their members' learned rows (scores: the members' largest), against the union of theirs
        g_c, s_c, b_c = (np.stack([m[list(ms)].max(0) for ms in zero_shot]) for m in (g_true, scores, graph))
        res = metrics.graph_metrics(g_c, s_c, rows, cols, learned_binary=b_c)
        out.update({k + "_zero_shot": v for k, v in res.items()})
    return out


def heldout_graph_metrics(adata, latents: np.ndarray, held_out: np.ndarray, variants: dict) -> dict:
    """Target identification of the held-out perturbations (issue 29 point 4): for each step-3
    variant (``variants``: suffix -> that variant's rows of the target scores and graph for the
    perturbations ``held_out``), ``graph_*_<suffix>`` against their true targets, latents matched
    as in :func:`evaluate_run` (|Pearson| on the training cells, ``latents`` those of step 1's
    model). Empty without ground truth or held-out perturbations."""
    if "z_true" not in adata.obsm or "targets" not in adata.uns or not len(held_out) or not variants:
        return {}
    train = training_cells(adata)
    _, rows, cols = metrics.match_latents(np.asarray(adata.obsm["z_true"])[train], latents[train], "pearson")
    g_true = np.asarray(adata.uns["targets"]).astype(bool)[held_out]
    out = {}
    for suffix, (scores, graph) in variants.items():
        res = metrics.graph_metrics(g_true, scores, rows, cols, learned_binary=graph.astype(bool))
        out.update({f"{k}_{suffix}": v for k, v in res.items()})
    return out


def zero_shot_combinations(adata, trained: np.ndarray) -> list[list[int]]:
    """The members of every held-out combination all of whose members were ``trained``."""
    perturbations, combinations = dataset_perturbations(adata)
    if not combinations:
        return []
    labels, _ = perturbation_labels(adata)
    members = condition_members(perturbations, combinations)
    held = np.unique(labels[~training_cells(adata)])
    return [members[c] for c in held if c >= len(perturbations) and set(members[c]) <= set(trained.tolist())]


# UDR over the first r models of a setting (the run and its replicates 1..r-1), beside the UDR
# over all of them: ``udr_r<r>`` for each r here that the setting has models for.
UDR_MODELS = (2, 3, 5)


def udr_score(models: list[np.ndarray], min_variance: float = 0.01) -> dict:
    """The selection scores of a run's setting: UDR (:func:`metrics.udr`) over the latents of
    its ``models`` (the run's, then its replicates'), on every cell, and ``udr_r<r>`` over the
    first r of them (``UDR_MODELS``); NaN for a run without replicates."""
    if len(models) < 2:
        return {"udr": float("nan"), "udr_models": len(models)}
    counts = [r for r in UDR_MODELS if r < len(models)] + [len(models)]
    scores = metrics.udr_of_first(models, counts, min_variance)
    return {"udr": scores[len(models)], "udr_models": len(models),
            **{f"udr_r{r}": scores[r] for r in UDR_MODELS if r in scores}}


def mask_agreement(adata, latents: list[np.ndarray], graphs: list[np.ndarray]) -> float:
    """How stable a setting's learned target graph is across its models (the run and its
    replicates; no ground truth): the mean over every pair of models of the F1 of one binary
    graph against the other (their Dice overlap; 0 when both are empty), on the trained
    perturbations' rows, the latents of the pair matched by |Pearson correlation| on the
    training cells. NaN with fewer than two models."""
    if len(latents) < 2:
        return float("nan")
    train, rows = training_cells(adata), trained_perturbations(adata)
    scores = []
    for i in range(len(latents)):
        for j in range(i + 1, len(latents)):
            _, a, b = metrics.match_latents(latents[i][train], latents[j][train], "pearson")
            g_i, g_j = graphs[i][rows].astype(bool), graphs[j][rows].astype(bool)
            scores.append(metrics.graph_metrics(g_i, g_j.astype(float), a, b, learned_binary=g_j)["graph_f1"])
    return float(np.mean(scores))


def save_model(model: SparseShiftVAE, weights, config) -> None:
    """Weights and config of a model, each written atomically."""
    with io.atomic_path(weights) as tmp_w, io.atomic_path(config) as tmp_c:
        model.cpu().save(tmp_w, tmp_c)


def save_run(model, history, latents, info, adata, outputs: dict) -> None:
    """Write the declared outputs of a training job, each atomically."""
    save_model(model, outputs["weights"], outputs["config"])
    io.write_tsv(history, outputs["history"])
    with io.atomic_path(outputs["latents"]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, z_mean=latents.astype(np.float32), obs_names=np.asarray(adata.obs_names))
    io.write_json(info, outputs["info"])
