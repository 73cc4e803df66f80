"""One training run and its evaluation, from an AnnData to files.

A dataset the pipeline trains on is an ``.h5ad`` with counts in ``X``,
``obs["perturbation"]`` (the label of each cell), ``obs["split"]`` (``train`` or
``heldout``) and ``uns["perturbations"]`` (the label order). Simulations add the
truth: ``obsm["z_true"]`` and ``uns["targets"]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import io, metrics
from .batched import fit_many
from .io import CONSOLE, read_dataset
from .model import ModelConfig, SparseShiftVAE
from .train import TrainConfig, TrainingDiverged, fit, seed_everything, select_device, split_train_val
from .transfer import TransferConfig, transfer_run, transfer_stacked

log = logging.getLogger(__name__)


def perturbation_labels(adata, path="<dataset>") -> tuple[np.ndarray, list[str]]:
    """Integer label of each cell in the order of ``uns["perturbations"]``."""
    for field in ("perturbation", "split"):
        if field not in adata.obs:
            raise io.InputError(path, f"obs/{field}", "a column of per-cell values", "no such column")
    names = list(adata.uns.get("perturbations", pd.unique(adata.obs["perturbation"].astype(str))))
    index = pd.Index(names)
    labels = index.get_indexer(adata.obs["perturbation"].astype(str))
    if (labels < 0).any():
        missing = sorted(set(adata.obs["perturbation"].astype(str)) - set(names))[:5]
        raise io.InputError(path, "obs/perturbation", "labels listed in uns/perturbations", f"{missing}")
    splits = set(adata.obs["split"].astype(str))
    if not splits <= {"train", "heldout"}:
        raise io.InputError(path, "obs/split", "values 'train' or 'heldout'", f"{sorted(splits)}")
    return labels.astype(np.int64), names


def training_cells(adata) -> np.ndarray:
    """Boolean mask of the cells of training perturbations."""
    return adata.obs["split"].astype(str).to_numpy() == "train"


def count_matrix(adata, path="<dataset>") -> np.ndarray:
    """Dense float32 counts, checked to be finite and non-negative."""
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all() or (x < 0).any():
        raise io.InputError(path, "X", "finite, non-negative counts", "negative or non-finite values")
    return x


class RunData:
    """A dataset on the device, split as every phase of a run sees it: training and
    validation cells (the seeded split of the ``train`` cells) and held-out cells."""

    def __init__(self, adata, val_fraction: float, seed: int, device: torch.device, path="<dataset>"):
        labels, self.names = perturbation_labels(adata, path)
        x = count_matrix(adata, path)
        train_cells = np.flatnonzero(training_cells(adata))
        tr, va = split_train_val(len(train_cells), val_fraction, seed)
        self.train_cells, self.val_cells = train_cells[tr], train_cells[va]
        self.heldout_cells = np.flatnonzero(~training_cells(adata))
        self.heldout_perturbations = np.unique(labels[self.heldout_cells])
        self.x = torch.as_tensor(x, device=device)
        self.labels = torch.as_tensor(labels, device=device)
        self.device = device

    def cells(self, which: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[which], self.labels[which]

    def split_elbos(self, model: SparseShiftVAE, suffix: str = "") -> dict:
        """ELBOs of the model's current weights on the training and validation cells, one
        deterministic pass each (unlike the history's running minibatch averages)."""
        out = {f"elbo_train{suffix}": float(model.elbo(*self.cells(self.train_cells)))}
        val = model.elbo(*self.cells(self.val_cells)) if len(self.val_cells) else float("nan")
        out[f"elbo_val{suffix}"] = float(val)
        return out


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


def train_run(
    adata,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    path: str = "<dataset>",
) -> tuple[SparseShiftVAE, pd.DataFrame, np.ndarray, dict]:
    """Train on the ``train`` split; return the model, its history, the latent means
    of every cell and timing information."""
    data, model = new_run(adata, model_cfg, train_cfg, select_device(device), path)
    history = fit(model, data.x, data.labels, data.train_cells, data.val_cells, train_cfg, checkpoint)
    latents, info = finish_run(model, history, data, train_cfg.lr)
    return model, history, latents, info


def evaluate_run(adata, model: SparseShiftVAE, latents: np.ndarray) -> dict:
    """Disentanglement (MCC, R²) and target identification (precision, recall, F1, AUPRC).

    The ELBOs come from the training job (``train_info.json``). Latent metrics use the
    cells of training perturbations. Graph metrics (for priors that learn a target
    graph) compare the learned graph with the truth in three conventions:

    * ``graph_*``: latents matched by |Pearson correlation| (the MCC matching), on the
      training perturbations (held-out ones have no learned mask in this phase);
    * ``graph_*_all``: the same matching, on all perturbations, held-out ones counting
      as misses;
    * ``graph_*_signed``: latents matched by the *signed* Pearson correlation, on all
      perturbations with held-out ones as misses: the released sVAE+ code's
      convention, the one the paper's Table 1 numbers are comparable to.
    """
    labels, _ = perturbation_labels(adata)
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
    train_perts = np.unique(labels[train])
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
    return out


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


def train_stacked(
    adatas: list,
    model_cfgs: list[ModelConfig],
    train_cfgs: list[TrainConfig],
    device: str = "auto",
    checkpoint: str | Path | None = None,
    paths: list[str] | None = None,
) -> list[tuple[SparseShiftVAE, pd.DataFrame, np.ndarray, dict]]:
    """:func:`train_run` for several runs (run i: ``adatas[i]``, ``model_cfgs[i]``,
    ``train_cfgs[i]``), trained together as one batched model
    (:func:`sparseshift.batched.fit_many`): the seeds, settings and replicates of a method.

    The runs may differ in their seed and in the swept weights (beta, lambda, alpha) only.
    Each run starts from the same initial weights and validation split as its
    :func:`train_run`; its random draws differ, so its numbers are not those of the
    one-model run. ``train_seconds`` of each run is the stack's time divided by its size. A
    model of the stack that diverges stops them all (:class:`TrainingDiverged` names it).
    """
    seeds = [c.seed for c in train_cfgs]
    if any(replace(c, seed=0) != replace(train_cfgs[0], seed=0) for c in train_cfgs):
        raise ValueError("train_stacked: the runs of a stack must share their training settings but the seed")
    dev = select_device(device)
    paths = paths or ["<dataset>"] * len(adatas)
    shared: dict = {}  # (dataset, seed) -> RunData: the settings of one seed share its tensors
    runs = []
    for adata, model_cfg, train_cfg, path in zip(adatas, model_cfgs, train_cfgs, paths):
        data, model = new_run(adata, model_cfg, train_cfg, dev, path, shared.get((id(adata), train_cfg.seed)))
        shared[(id(adata), train_cfg.seed)] = data
        runs.append((data, model))
    histories = fit_many(
        [model for _, model in runs], [d.x for d, _ in runs], [d.labels for d, _ in runs],
        [d.train_cells for d, _ in runs], [d.val_cells for d, _ in runs], train_cfgs[0], seeds, checkpoint,
    )
    out = []
    for i, ((data, model), history) in enumerate(zip(runs, histories)):
        try:
            latents, info = finish_run(model, history, data, train_cfgs[i].lr)
        except TrainingDiverged as err:
            raise err.update(member=i)
        out.append((model, history, latents, {**info, "stacked_models": len(runs)}))
    return out


def run_model_config(adata, path, model_settings: dict) -> ModelConfig:
    """The model of a training job on ``adata``: sized by the dataset, the rest from config."""
    _, names = perturbation_labels(adata, path)
    return ModelConfig(n_genes=adata.n_vars, n_perturbations=len(names), perturbations=names, **model_settings)


def run_folder(output) -> str:
    """The run an output file belongs to (its folder), as jobs name it to the user."""
    return str(Path(output).parent)


@contextlib.contextmanager
def diverging(runs: list[str], checkpoint):
    """A job's training that diverges (:class:`TrainingDiverged`) names its run (``runs[member]``
    of a stack) and removes its checkpoint, so that a rerun with another learning rate starts
    afresh instead of resuming the diverging trajectory."""
    try:
        yield
    except TrainingDiverged as err:
        Path(checkpoint).unlink(missing_ok=True)
        raise err.update(run=runs[err.member or 0])


def train_from_files(
    data_path, model_settings: dict, train_settings: dict, device: str, checkpoint, outputs: dict
) -> None:
    """The training job: read the dataset, train (resuming from ``checkpoint``), write outputs.

    The console gets a start and a finish line; the log every epoch."""
    run = run_folder(outputs["weights"])
    train_cfg = TrainConfig(**train_settings)
    log.info("train %s: start, %d epochs", run, train_cfg.epochs, extra=CONSOLE)
    adata = read_dataset(data_path)
    model_cfg = run_model_config(adata, data_path, model_settings)
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    with diverging([run], checkpoint):
        model, history, latents, info = train_run(adata, model_cfg, train_cfg, device, checkpoint, str(data_path))
    save_run(model, history, latents, info, adata, outputs)
    Path(checkpoint).unlink(missing_ok=True)
    log.info("train %s: done, %d epochs in %.1f s, validation ELBO %.2f", run, info["epochs_run"],
             info["train_seconds"], info["elbo_val"], extra=CONSOLE)


def train_stacked_from_files(
    data_paths: list, model_settings: list[dict], train_settings: list[dict], device: str, checkpoint,
    outputs: dict,
) -> None:
    """The stacked training job: several runs of one method (seeds, settings, replicates)
    trained as one batched model (:func:`train_stacked`). Run i trains on ``data_paths[i]``
    (a file shared by several runs is read once) with ``model_settings[i]`` and
    ``train_settings[i]``; each entry of ``outputs`` is a list with one path per run."""
    folders = [run_folder(path) for path in outputs["weights"]]
    train_cfgs = [TrainConfig(**settings) for settings in train_settings]
    name = f"{folders[0]} and {len(folders) - 1} more" if len(folders) > 1 else folders[0]
    log.info("train %s (stacked): start, %d epochs", name, train_cfgs[0].epochs, extra=CONSOLE)
    files = {path: read_dataset(path) for path in dict.fromkeys(data_paths)}
    adatas = [files[path] for path in data_paths]
    model_cfgs = [run_model_config(a, p, m) for a, p, m in zip(adatas, data_paths, model_settings)]
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    with diverging(folders, checkpoint):
        runs = train_stacked(adatas, model_cfgs, train_cfgs, device, checkpoint, [str(p) for p in data_paths])
    for i, (adata, (model, history, latents, info)) in enumerate(zip(adatas, runs)):
        save_run(model, history, latents, info, adata, {key: paths[i] for key, paths in outputs.items()})
    Path(checkpoint).unlink(missing_ok=True)
    infos = [info for *_, info in runs]
    log.info("train %s (stacked): done, %d epochs in %.1f s, validation ELBO %s", name, infos[0]["epochs_run"],
             sum(info["train_seconds"] for info in infos), " ".join(f"{info['elbo_val']:.2f}" for info in infos),
             extra=CONSOLE)


def load_latents(path) -> np.ndarray:
    """A run's posterior means (``latents.npz``), refused when not finite."""
    with np.load(path, allow_pickle=False) as npz:
        latents = npz["z_mean"]
    if not np.isfinite(latents).all():
        raise io.InputError(path, "z_mean", "finite posterior means",
                            f"{int((~np.isfinite(latents)).sum())} non-finite values (did its training diverge?)")
    return latents


def udr_score(latents: np.ndarray, replicates: list, min_variance: float = 0.01) -> dict:
    """The selection score of a run's setting: UDR (:func:`metrics.udr`) over the run's
    latents and those of its replicates (files), on every cell; NaN without replicates."""
    if not replicates:
        return {"udr": float("nan"), "udr_models": 1}
    models = [latents] + [load_latents(path) for path in replicates]
    return {"udr": metrics.udr(models, min_variance), "udr_models": len(models)}


def evaluate_from_files(inputs: dict, record: dict, output, udr_min_variance: float = 0.01) -> dict:
    """The evaluation job: metrics of one trained run and the selection score of its
    setting (with its replicates, ``inputs["replicates"]``), written as JSON with its
    identifiers."""
    adata = read_dataset(inputs["data"])
    model = SparseShiftVAE.load(inputs["weights"], inputs["config"])
    latents = load_latents(inputs["latents"])
    result = {**record, **evaluate_run(adata, model, latents)}
    result.update(udr_score(latents, list(inputs.get("replicates", [])), udr_min_variance))
    # training timings and ELBOs, held-out scores (none when the setting has no transfer),
    # and the code of each step
    for key, step in (("info", "train"), ("heldout", "transfer")):
        if not inputs.get(key):
            result["inll"] = float("nan")
            continue
        with open(inputs[key]) as fh:
            values = json.load(fh)
        result[f"{step}_code_version"] = values.pop("code_version", "unknown")
        result.update(values)
    result["code_version"] = io.code_version()
    io.write_json(result, output)
    return result


def transfer_inputs(inputs: dict, train_cfg: TrainConfig, dev: torch.device,
                    data: RunData | None = None) -> tuple[RunData, SparseShiftVAE]:
    """A transfer job's data (split as in training; ``data`` when given: another run's of the
    same dataset and seed) and trained model, checked to match."""
    if data is None:
        adata = read_dataset(inputs["data"])
        data = RunData(adata, train_cfg.val_fraction, train_cfg.seed, dev, str(inputs["data"]))
    model = SparseShiftVAE.load(inputs["weights"], inputs["config"]).to(dev)
    if model.cfg.perturbations and list(model.cfg.perturbations) != list(data.names):
        raise io.InputError(
            inputs["data"], "uns/perturbations", f"the perturbations the model was trained on ({inputs['config']})"
        )
    log.info(
        "transfer of %s to %d held-out perturbations (%d cells), device %s",
        model.cfg.method, len(data.heldout_perturbations), len(data.heldout_cells), dev,
    )
    return data, model


def save_transfer(result, info_path, outputs: dict) -> dict:
    """Write a transfer job's outputs (one run's), each atomically; returns its summary."""
    with open(info_path) as fh:
        info = json.load(fh)
    summary = {"elbo_train": info["elbo_train"], "elbo_val": info["elbo_val"], **result.summary,
               "code_version": io.code_version()}
    save_model(result.retrained, outputs["retrained_weights"], outputs["retrained_config"])
    save_model(result.finetuned, outputs["finetuned_weights"], outputs["finetuned_config"])
    io.write_tsv(result.retrain_history, outputs["retrain_history"])
    io.write_tsv(result.finetune_history, outputs["finetune_history"])
    io.write_tsv(result.per_perturbation, outputs["per_perturbation"])
    io.write_json(summary, outputs["summary"])
    return summary


def transfer_from_files(
    inputs: dict, train_settings: dict, transfer_settings: dict, device: str, checkpoint, outputs: dict
) -> dict:
    """The transfer job: steps 2 and 3 of the protocol on a trained run, the held-out
    ELBO / IWELBO / I-NLL (``heldout.json``, per perturbation in ``heldout_perturbations.tsv``)
    and the model of each step."""
    run = run_folder(Path(outputs["summary"]).parent)
    train_cfg = TrainConfig(**train_settings)
    cfg = TransferConfig(**transfer_settings)
    log.info("transfer %s: start, %d + %d epochs, I-NLL with %d particles", run, cfg.retrain_epochs,
             cfg.finetune_epochs, cfg.particles, extra=CONSOLE)
    data, model = transfer_inputs(inputs, train_cfg, select_device(device))
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    with diverging([run], checkpoint):
        result = transfer_run(model, data, train_cfg, cfg, checkpoint)
    summary = save_transfer(result, inputs["info"], outputs)
    Path(checkpoint).unlink(missing_ok=True)
    log.info("transfer %s: done, %d + %d epochs, I-NLL %.2f", run, summary.get("retrain_epochs_run", 0),
             summary.get("finetune_epochs_run", 0), summary["inll"], extra=CONSOLE)
    return summary


def transfer_stacked_from_files(
    inputs: dict, train_settings: list[dict], transfer_settings: dict, device: str, checkpoint, outputs: dict
) -> list[dict]:
    """The stacked transfer job: :func:`transfer_from_files` for the runs of several seeds
    (:func:`sparseshift.transfer.transfer_stacked`); every entry of ``inputs`` and ``outputs``
    is a list with one path per run, ``train_settings`` one dict per run."""
    runs = [run_folder(Path(path).parent) for path in outputs["summary"]]
    name = f"{runs[0]} and {len(runs) - 1} more" if len(runs) > 1 else runs[0]
    cfg = TransferConfig(**transfer_settings)
    log.info("transfer %s (stacked): start, %d + %d epochs, I-NLL with %d particles", name, cfg.retrain_epochs,
             cfg.finetune_epochs, cfg.particles, extra=CONSOLE)
    dev = select_device(device)
    train_cfgs = [TrainConfig(**settings) for settings in train_settings]
    shared: dict = {}  # (dataset, seed) -> RunData: each file read once, the settings of a seed share it
    loaded = []
    for i, c in enumerate(train_cfgs):
        key = (inputs["data"][i], c.seed)
        data, model = transfer_inputs({k: v[i] for k, v in inputs.items()}, c, dev, shared.get(key))
        shared[key] = data
        loaded.append((data, model))
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    with diverging(runs, checkpoint):
        results = transfer_stacked([m for _, m in loaded], [d for d, _ in loaded], train_cfgs, cfg, checkpoint)
    summaries = [
        save_transfer(result, inputs["info"][i], {k: v[i] for k, v in outputs.items()})
        for i, result in enumerate(results)
    ]
    Path(checkpoint).unlink(missing_ok=True)
    log.info("transfer %s (stacked): done, I-NLL %s", name, " ".join(f"{s['inll']:.2f}" for s in summaries),
             extra=CONSOLE)
    return summaries
