"""The jobs of the training, transfer and evaluation rules: read their input files, call
:mod:`sparseshift.runs` and :mod:`sparseshift.transfer`, write their outputs atomically. The
console gets a start and a finish line per job; the job's log every epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from . import io
from .data import RunData, dataset_perturbations, load_latents, perturbation_labels
from .io import CONSOLE, read_dataset
from .model import ModelConfig, SparseShiftVAE
from .runs import (evaluate_run, heldout_graph_metrics, mask_agreement, save_model, save_run, train_runs,
                   udr_score)
from .train import TrainConfig, TrainingDiverged, select_device
from .transfer import TransferConfig, transfer_runs

log = logging.getLogger(__name__)


def run_model_config(adata, path, model_settings: dict) -> ModelConfig:
    """The model of a training job on ``adata``: sized by the dataset, the rest from config."""
    perturbation_labels(adata, path)  # checked
    names, combinations = dataset_perturbations(adata, path)
    return ModelConfig(n_genes=adata.n_vars, n_perturbations=len(names), perturbations=names,
                       combinations=combinations, **model_settings)


def run_folder(output) -> str:
    """The run an output file belongs to (its folder), as jobs name it to the user."""
    return str(Path(output).parent)


# Train keys that do not change a trajectory up to its checkpoint: a run may go on for more
# epochs, or be checkpointed more often, and still resume.
_RESUMABLE_CHANGES = ("epochs", "checkpoint_every")


def _trajectory(settings: dict) -> dict:
    """The settings a checkpoint's trajectory depends on (as JSON values)."""
    out = json.loads(json.dumps(settings, default=str))
    train = out.get("train")
    for entry in train if isinstance(train, list) else [train] if train else []:
        for key in _RESUMABLE_CHANGES:
            entry.pop(key, None)
    return out


def _settings_record(checkpoint) -> Path:
    return Path(f"{checkpoint}.settings.json")


def _changes(saved, current, prefix="") -> list[str]:
    """The keys (dotted) whose values differ between two settings, with both values."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [c for key in sorted(set(saved) | set(current), key=str)
                for c in _changes(saved.get(key), current.get(key), f"{prefix}{key}.")]
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [c for i, (a, b) in enumerate(zip(saved, current)) for c in _changes(a, b, f"{prefix}{i}.")]
    return [] if saved == current else [f"{prefix.rstrip('.')} {saved} -> {current}"]


@contextlib.contextmanager
def checkpointed(runs: list[str], checkpoint, settings: dict):
    """A job's training with its checkpoint: resumed only when the checkpoint was made with the
    same ``settings`` (recorded beside it; more or fewer epochs still resume); one of other
    settings is removed, and the log says which keys changed. A training that diverges (:class:`TrainingDiverged`) names its run
    (``runs[member]`` of a stack) and removes its checkpoint, so that a rerun with another
    learning rate starts afresh instead of resuming the diverging trajectory."""
    ckpt, record = Path(checkpoint), _settings_record(checkpoint)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    current = _trajectory(settings)
    if ckpt.exists() and record.exists():
        changes = _changes(json.loads(record.read_text()), current)
        if changes:
            log.warning("%s: the settings changed since its checkpoint (%s): training starts over, not resumed",
                        runs[0], "; ".join(changes[:10]), extra=CONSOLE)
            ckpt.unlink()
    io.write_json(current, record)
    try:
        yield
    except TrainingDiverged as err:
        finished(checkpoint)
        raise err.update(run=runs[err.member or 0])


def finished(checkpoint) -> None:
    """Remove a job's checkpoint and its settings once its outputs are written."""
    Path(checkpoint).unlink(missing_ok=True)
    _settings_record(checkpoint).unlink(missing_ok=True)


def job_name(runs: list[str]) -> str:
    """A job's runs as the console names them: the first, and how many more."""
    return f"{runs[0]} and {len(runs) - 1} more" if len(runs) > 1 else runs[0]


def train_from_files(
    data_paths: list, model_settings: list[dict], train_settings: list[dict], device: str, checkpoint,
    outputs: dict, stacked: bool,
) -> None:
    """The training job: read the datasets (a file shared by several runs is read once), train
    the runs (:func:`sparseshift.runs.train_runs`, resuming from ``checkpoint``; run i trains on
    ``data_paths[i]`` with ``model_settings[i]`` and ``train_settings[i]``), write each run's
    outputs (every entry of ``outputs`` is a list with one path per run). ``stacked``: the runs
    of a stacked rule (seeds, settings, replicates of one method) as one batched model, else
    the one run of a one-model rule as one model.

    The console gets a start and a finish line; the log every epoch."""
    folders = [run_folder(path) for path in outputs["weights"]]
    name, how = job_name(folders), " (stacked)" if stacked else ""
    train_cfgs = [TrainConfig(**settings) for settings in train_settings]
    log.info("train %s%s: start, %d epochs", name, how, train_cfgs[0].epochs, extra=CONSOLE)
    files = {path: read_dataset(path) for path in dict.fromkeys(data_paths)}
    adatas = [files[path] for path in data_paths]
    model_cfgs = [run_model_config(a, p, m) for a, p, m in zip(adatas, data_paths, model_settings)]
    settings = {"data": [str(p) for p in data_paths], "model": model_settings, "train": train_settings}
    if not stacked:  # one run: its own settings, as its checkpoint records them (the log names train.lr)
        settings = {key: value[0] for key, value in settings.items()}
    with checkpointed(folders, checkpoint, settings):
        runs = train_runs(adatas, model_cfgs, train_cfgs, device, checkpoint, [str(p) for p in data_paths],
                          stacked=stacked)
    for i, (adata, (model, history, latents, info)) in enumerate(zip(adatas, runs)):
        save_run(model, history, latents, info, adata, {key: paths[i] for key, paths in outputs.items()})
    finished(checkpoint)
    infos = [info for *_, info in runs]
    elbos = " ".join(f"{info['elbo_val']:.2f}" for info in infos)
    log.info("train %s%s: done, %d epochs in %.1f s, validation ELBO %s", name, how, infos[0]["epochs_run"],
             sum(info["train_seconds"] for info in infos), elbos, extra=CONSOLE)


def replicate_graphs(paths: list) -> list[np.ndarray]:
    """The learned target graphs of a run's replicates, whose models are read from beside their
    latents (``model.pt`` and ``model.json``, written by the same training job as ``paths``)."""
    models = [SparseShiftVAE.load(Path(p).parent / "model.pt", Path(p).parent / "model.json") for p in paths]
    return [model.prior.target_graph().cpu().numpy() for model in models]


def evaluate_from_files(inputs: dict, record: dict, output, udr_min_variance: float = 0.01) -> dict:
    """The evaluation job: metrics of one trained run and the selection scores of its
    setting (with its replicates, ``inputs["replicates"]``: UDR, and the agreement of the
    models' target graphs for priors that learn one), written as JSON with its identifiers."""
    adata = read_dataset(inputs["data"])
    model = SparseShiftVAE.load(inputs["weights"], inputs["config"])
    latents = load_latents(inputs["latents"])
    replicates = list(inputs.get("replicates", []))
    models = [latents] + [load_latents(path) for path in replicates]
    result = {**record, **evaluate_run(adata, model, latents)}
    result.update(udr_score(models, udr_min_variance))
    if replicates and model.prior.target_graph() is not None:  # the stability of its targets
        graphs = [model.prior.target_graph().cpu().numpy()] + replicate_graphs(replicates)
        result["mask_agreement"] = mask_agreement(adata, models, graphs)
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
    if model.cfg.perturbations and list(model.cfg.perturbations) != list(data.perturbations):
        raise io.InputError(
            inputs["data"], "uns/perturbations", f"the perturbations the model was trained on ({inputs['config']})"
        )
    if dict(model.cfg.combinations) != dict(data.combinations):
        raise io.InputError(
            inputs["data"], "uns/combinations", f"the combinations the model was trained on ({inputs['config']})"
        )
    log.info(
        "transfer of %s to %d held-out perturbations (%d cells), device %s",
        model.cfg.method, len(data.heldout_perturbations), len(data.heldout_cells), dev,
    )
    return data, model


def save_transfer(result, info_path, outputs: dict, data: RunData, latents: np.ndarray) -> dict:
    """Write a transfer job's outputs (one run's), each atomically; returns its summary, which
    scores the held-out rows of the target graph (``latents``: step 1's, for the matching)."""
    with open(info_path) as fh:
        info = json.load(fh)
    graphs = heldout_graph_metrics(data.adata, latents, result.held_out, result.heldout_targets)
    summary = {"elbo_train": info["elbo_train"], "elbo_val": info["elbo_val"], **result.summary, **graphs,
               "code_version": io.code_version()}
    save_model(result.retrained, outputs["retrained_weights"], outputs["retrained_config"])
    save_model(result.finetuned, outputs["finetuned_weights"], outputs["finetuned_config"])
    io.write_tsv(result.retrain_history, outputs["retrain_history"])
    io.write_tsv(result.finetune_history, outputs["finetune_history"])
    io.write_tsv(result.per_perturbation, outputs["per_perturbation"])
    io.write_json(summary, outputs["summary"])
    return summary


def transfer_from_files(
    inputs: dict, train_settings: list[dict], transfer_settings: dict, device: str, checkpoint, outputs: dict,
    stacked: bool,
) -> list[dict]:
    """The transfer job: steps 2 and 3 of the protocol on trained runs
    (:func:`sparseshift.transfer.transfer_runs`; ``stacked``: the runs of a stacked rule as
    one batched model, else the one run of a one-model rule as one model), each run's
    held-out ELBO / IWELBO / I-NLL (``heldout.json``, per perturbation in
    ``heldout_perturbations.tsv``) and the model of each step. Every entry of ``inputs`` and
    ``outputs`` is a list with one path per run, ``train_settings`` one dict per run; returns
    the runs' summaries."""
    runs = [run_folder(Path(path).parent) for path in outputs["summary"]]
    name, how = job_name(runs), " (stacked)" if stacked else ""
    cfg = TransferConfig(**transfer_settings)
    log.info("transfer %s%s: start, %d + %d epochs, I-NLL with %d particles", name, how, cfg.retrain_epochs,
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
    latents = [model.latent_means(data.x).cpu().numpy() for data, model in loaded]  # step 1's
    settings = {"train": train_settings if stacked else train_settings[0], "transfer": transfer_settings}
    with checkpointed(runs, checkpoint, settings):
        results = transfer_runs([m for _, m in loaded], [d for d, _ in loaded], train_cfgs, cfg, checkpoint,
                                stacked=stacked)
    summaries = [
        save_transfer(result, inputs["info"][i], {k: v[i] for k, v in outputs.items()}, loaded[i][0], latents[i])
        for i, result in enumerate(results)
    ]
    finished(checkpoint)
    epochs = ", ".join(f"{s.get('retrain_epochs_run', 0)} + {s.get('finetune_epochs_run', 0)}"
                       for s in summaries)
    log.info("transfer %s%s: done, %s epochs, I-NLL %s", name, how, epochs,
             " ".join(f"{s['inll']:.2f}" for s in summaries), extra=CONSOLE)
    return summaries
