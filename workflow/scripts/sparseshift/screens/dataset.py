"""The training dataset of a screen or a Replogle fold: labelled cells split into the training
perturbations and the held-out ones, in the contract of :mod:`sparseshift.data`."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..io import InputError

log = logging.getLogger(__name__)


def split_perturbations(adata, heldout: list[str], what: str, path="<dataset>") -> tuple[list[str], list[str]]:
    """Label ``adata`` (in place) for training: ``obs["perturbation"]`` categorical in the order
    of ``uns["perturbations"]`` (training perturbations sorted, then the held-out ones sorted),
    ``obs["split"]`` ``train`` / ``heldout`` and ``uns["heldout_perturbations"]``. ``what`` names
    the dataset in errors (e.g. ``fold 'exosome'``). Returns (training, held-out) perturbations."""
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    held = sorted(dict.fromkeys(heldout))
    present = set(pert)
    absent = [p for p in held if p not in present]
    if absent:
        raise InputError(path, "obs/perturbation", f"cells of every held-out perturbation of {what}",
                         f"none for {absent[:10]}")
    train = sorted(present - set(held))
    if not train:
        raise InputError(path, "obs/perturbation", f"training perturbations besides the held-out ones of {what}",
                         "none")
    order = train + held
    is_held = np.isin(pert, held)
    adata.obs["perturbation"] = pd.Categorical(pert, categories=order)
    adata.obs["split"] = pd.Categorical(np.where(is_held, "heldout", "train"), categories=["train", "heldout"])
    adata.uns["perturbations"] = order
    adata.uns["heldout_perturbations"] = held
    log.info("%s: %d training perturbations (%d cells), %d held out (%d cells)",
             what, len(train), int((~is_held).sum()), len(held), int(is_held.sum()))
    return train, held
