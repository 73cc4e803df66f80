"""The datasets the pipeline trains on, as a run sees them.

A dataset is an ``.h5ad`` with counts in ``X``, ``obs["perturbation"]`` (the label of each
cell), ``obs["split"]`` (``train`` or ``heldout``) and ``uns["perturbations"]`` (the label
order). Cells may carry combinations of perturbations: ``uns["combinations"]`` maps a
combination's label (used in ``obs["perturbation"]``) to its member perturbations; the
perturbations are the model's, and each label (perturbation or combination) a *condition*
(:func:`perturbation_labels`). Simulations add the truth: ``obsm["z_true"]`` and
``uns["targets"]`` (one row per perturbation; a combination's targets are its members' union).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import io
from .model import SparseShiftVAE
from .train import split_train_val


def dataset_perturbations(adata, path="<dataset>") -> tuple[list[str], dict[str, list[str]]]:
    """The single perturbations (the model's, in the order of ``uns["perturbations"]``) and the
    combinations (``uns["combinations"]``: label -> member labels). A member not listed in
    ``uns["perturbations"]`` (it occurs only inside combinations) is added after them, in order
    of first appearance; a combination label listed there (datasets written before
    combinations were conditions) is not a perturbation."""
    names = list(adata.uns.get("perturbations", pd.unique(adata.obs["perturbation"].astype(str))))
    raw = adata.uns.get("combinations", None)
    combinations = {str(k): [str(m) for m in v] for k, v in (raw or {}).items()}
    if not combinations:
        return names, {}
    names = [n for n in names if n not in combinations]
    known = set(names)
    for label, members in combinations.items():
        if not members or len(set(members)) != len(members):
            raise io.InputError(path, f"uns/combinations/{label}", "two or more distinct member perturbations",
                                f"{members}")
        for m in members:
            if m in combinations:
                raise io.InputError(path, f"uns/combinations/{label}", "members that are single perturbations",
                                    f"the combination {m!r}")
            if m not in known:
                names.append(m)
                known.add(m)
    return names, combinations


def perturbation_labels(adata, path="<dataset>") -> tuple[np.ndarray, list[str]]:
    """Integer label of each cell: its condition, in the order of :func:`dataset_perturbations`'
    perturbations then combinations (without combinations, ``uns["perturbations"]``'s order);
    and the conditions' names."""
    for field in ("perturbation", "split"):
        if field not in adata.obs:
            raise io.InputError(path, f"obs/{field}", "a column of per-cell values", "no such column")
    perturbations, combinations = dataset_perturbations(adata, path)
    names = perturbations + list(combinations)
    index = pd.Index(names)
    labels = index.get_indexer(adata.obs["perturbation"].astype(str))
    if (labels < 0).any():
        missing = sorted(set(adata.obs["perturbation"].astype(str)) - set(names))[:5]
        raise io.InputError(path, "obs/perturbation", "labels listed in uns/perturbations", f"{missing}")
    splits = set(adata.obs["split"].astype(str))
    if not splits <= {"train", "heldout"}:
        raise io.InputError(path, "obs/split", "values 'train' or 'heldout'", f"{sorted(splits)}")
    return labels.astype(np.int64), names


def condition_members(perturbations: list[str], combinations: dict[str, list[str]]) -> list[list[int]]:
    """The member perturbations (indices) of every condition: ``[a]`` for perturbation a, then
    each combination's members."""
    index = {name: i for i, name in enumerate(perturbations)}
    return [[a] for a in range(len(perturbations))] + [[index[m] for m in ms] for ms in combinations.values()]


def perturbations_of(labels: np.ndarray, members: list[list[int]]) -> np.ndarray:
    """The sorted distinct perturbations that occur in cells of condition ``labels``."""
    conditions = np.unique(labels)
    return np.unique(np.asarray([a for c in conditions for a in members[c]], dtype=np.int64))


def trained_perturbations(adata, path="<dataset>") -> np.ndarray:
    """The perturbations (rows of the target graph) that occur in a training cell, alone or in
    a combination."""
    labels, _ = perturbation_labels(adata, path)
    train = training_cells(adata)
    perturbations, combinations = dataset_perturbations(adata, path)
    if not combinations:
        return np.unique(labels[train])
    return perturbations_of(labels[train], condition_members(perturbations, combinations))


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
        labels, self.names = perturbation_labels(adata, path)  # conditions
        self.perturbations, self.combinations = dataset_perturbations(adata, path)
        x = count_matrix(adata, path)
        train_cells = np.flatnonzero(training_cells(adata))
        tr, va = split_train_val(len(train_cells), val_fraction, seed)
        self.train_cells, self.val_cells = train_cells[tr], train_cells[va]
        self.heldout_cells = np.flatnonzero(~training_cells(adata))
        if self.combinations:
            # held out: the perturbations no training cell carries (a held-out combination of
            # trained perturbations has none of its own)
            members = condition_members(self.perturbations, self.combinations)
            trained = perturbations_of(labels[train_cells], members)
            seen = perturbations_of(labels[self.heldout_cells], members)
            self.heldout_perturbations = np.setdiff1d(seen, trained)
            # held-out combinations every member of which was trained: predicted zero-shot
            zero_shot = np.array([c >= len(self.perturbations) and bool(np.isin(ms, trained).all())
                                  for c, ms in enumerate(members)])
            self.zero_shot_cells = self.heldout_cells[zero_shot[labels[self.heldout_cells]]]
        else:
            self.heldout_perturbations = np.unique(labels[self.heldout_cells])
            self.zero_shot_cells = np.array([], dtype=np.int64)
        self.x = torch.as_tensor(x, device=device)
        self.labels = torch.as_tensor(labels, device=device)
        self.device = device
        self.adata = adata  # its ground truth, where it has one (the transfer's graph metrics)

    def cells(self, which: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[which], self.labels[which]

    def split_elbos(self, model: SparseShiftVAE, suffix: str = "") -> dict:
        """ELBOs of the model's current weights on the training and validation cells, one
        deterministic pass each (unlike the history's running minibatch averages)."""
        out = {f"elbo_train{suffix}": float(model.elbo(*self.cells(self.train_cells)))}
        val = model.elbo(*self.cells(self.val_cells)) if len(self.val_cells) else float("nan")
        out[f"elbo_val{suffix}"] = float(val)
        return out


def load_latents(path) -> np.ndarray:
    """A run's posterior means (``latents.npz``), refused when not finite."""
    with np.load(path, allow_pickle=False) as npz:
        latents = npz["z_mean"]
    if not np.isfinite(latents).all():
        raise io.InputError(path, "z_mean", "finite posterior means",
                            f"{int((~np.isfinite(latents)).sum())} non-finite values (did its training diverge?)")
    return latents
