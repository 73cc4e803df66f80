"""The datasets the pipeline trains on, as a run sees them.

A dataset is an ``.h5ad`` with counts in ``X``, ``obs["perturbation"]`` (the label of each
cell), ``obs["split"]`` (``train`` or ``heldout``) and ``uns["perturbations"]`` (the label
order). Simulations add the truth: ``obsm["z_true"]`` and ``uns["targets"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import io
from .model import SparseShiftVAE
from .train import split_train_val


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


def load_latents(path) -> np.ndarray:
    """A run's posterior means (``latents.npz``), refused when not finite."""
    with np.load(path, allow_pickle=False) as npz:
        latents = npz["z_mean"]
    if not np.isfinite(latents).all():
        raise io.InputError(path, "z_mean", "finite posterior means",
                            f"{int((~np.isfinite(latents)).sum())} non-finite values (did its training diverge?)")
    return latents
