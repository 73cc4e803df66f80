"""Replogle hold-out folds: the held-out perturbations of a fold of the configuration (a
Table S3 cluster, or the perturbations farthest from the controls) and its training dataset."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..io import InputError, read_dataset, write_h5ad
from . import CONTROL, MAX_NAMES
from ..screens.dataset import split_perturbations
from .table_s3 import expression_programs, find_cluster, read_table_s3

log = logging.getLogger(__name__)


def _perturbations(adata) -> np.ndarray:
    return adata.obs["perturbation"].astype(str).to_numpy()


def effect_scores(
    adata, *, n_pcs: int = 50, max_cells: int = 1000, seed: int = 0, path="<dataset>"
) -> pd.Series:
    """Linear-kernel MMD of each perturbation to the ``non-targeting`` controls, largest first.

    Embedding: PCA (``n_pcs`` components, seeded) fitted on log1p of counts normalised
    to 10^4 per cell, over all cells. Each perturbation's first ``max_cells`` cells (in
    obs order) are compared with the first ``max_cells`` control cells.
    """
    from sklearn.decomposition import PCA

    pert = _perturbations(adata)
    control = pert == CONTROL
    if not control.any():
        raise InputError(path, "obs/perturbation", f"'{CONTROL}' control cells for the effect fold "
                         "(preprocess with keep_controls=True)", "none")
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.array(adata.X, dtype=np.float32)
    x = x.astype(np.float32, copy=False)
    lib = x.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    x *= 1e4 / lib
    np.log1p(x, out=x)
    k = int(min(n_pcs, x.shape[0], x.shape[1]))
    emb = PCA(n_components=k, random_state=seed, copy=False).fit_transform(x)  # x is ours: centred in place
    del x
    ctrl_mean = emb[np.flatnonzero(control)[:max_cells]].mean(axis=0)
    codes, names = pd.factorize(pert)
    order = np.argsort(codes, kind="stable")  # cells grouped by perturbation, obs order kept
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    scores = {}
    for c, name in enumerate(names):
        if name == CONTROL:
            continue
        cells = order[bounds[c] : bounds[c + 1]][:max_cells]
        # Linear-kernel MMD² = mean(XXᵀ) + mean(YYᵀ) − 2·mean(XYᵀ) = ‖mean(X) − mean(Y)‖²:
        # the squared distance between the mean embeddings.
        diff = emb[cells].mean(axis=0) - ctrl_mean
        scores[name] = float(diff @ diff)
    s = pd.Series(scores, name="mmd").rename_axis("perturbation")
    # largest first; ties by name so the ranking is deterministic
    return s.iloc[np.lexsort((s.index.to_numpy(), -s.to_numpy()))]


def fold_perturbations(
    adata, fold: dict, clusters: pd.DataFrame, *, n_effect: int = 30, n_pcs: int = 50,
    max_cells: int = 1000, seed: int = 0, path="<dataset>",
) -> list[str]:
    """The held-out perturbations of a fold (a config entry).

    ``{"name": ..., "description": <Table S3 best_description>}``: the members of that
    cluster (matched case-insensitively, whitespace-normalised), in Table S3 order,
    those absent from ``adata`` dropped with a warning. ``{"name": ..., "cluster": ...}``
    (the config schema's key) is the same, or a word/phrase found in exactly one
    description.
    ``{"name": ..., "effect": True}``: the ``n_effect`` perturbations farthest from the
    controls (:func:`effect_scores`), farthest first.
    """
    name = fold.get("name", "<unnamed fold>")
    pert = _perturbations(adata)
    if fold.get("effect"):
        scores = effect_scores(adata, n_pcs=n_pcs, max_cells=max_cells, seed=seed, path=path)
        if n_effect >= len(scores):
            raise InputError(path, "obs/perturbation",
                             f"more than n_effect={n_effect} perturbations for fold {name!r} "
                             "(some must stay for training)", f"{len(scores)}")
        held = list(scores.index[:n_effect])
        log.info("fold %s: the %d perturbations farthest from control (MMD %.3g … %.3g)",
                 name, n_effect, scores.iloc[0], scores.iloc[n_effect - 1])
        return held
    if not (fold.get("description") or fold.get("cluster")):
        raise InputError("<config>", f"folds/{name}",
                         "a 'description' or 'cluster' (Table S3 best_description) or 'effect: true'",
                         str(fold))
    members = find_cluster(clusters, fold)
    present = set(pert) - {CONTROL}
    held = [p for p in members if p in present]
    absent = [p for p in members if p not in present]
    if absent:
        log.warning("fold %s: %d of its %d perturbations are absent from %s and dropped: %s",
                    name, len(absent), len(members), path, ", ".join(absent[:MAX_NAMES]))
    if not held:
        raise InputError(path, "obs/perturbation", f"cells of the perturbations of fold {name!r}",
                         f"none of {members[:10]}")
    return held


def make_fold(
    adata, heldout: list[str], fold_name: str, *, keep_controls_in_training: bool = False, path="<dataset>",
):
    """A training dataset for one fold (see :mod:`sparseshift.run`): X counts,
    ``obs["perturbation"]`` categorical in the order of ``uns["perturbations"]`` (training
    perturbations sorted, then held-out ones sorted), ``obs["split"]`` ``train`` /
    ``heldout``, ``uns["fold"]``, ``uns["heldout_perturbations"]``. Control cells are
    dropped unless ``keep_controls_in_training`` (then ``non-targeting`` is a training
    perturbation)."""
    pert = _perturbations(adata)
    if CONTROL in heldout:
        raise InputError("<fold>", "heldout", f"perturbations other than {CONTROL!r}", "it is listed")
    if not heldout:
        raise InputError(path, "obs/perturbation", f"cells of every held-out perturbation of fold {fold_name!r}",
                         "no held-out perturbations")
    keep = np.ones(len(pert), dtype=bool) if keep_controls_in_training else pert != CONTROL
    out = adata[keep].copy() if not keep.all() else adata.copy()
    split_perturbations(out, heldout, f"fold {fold_name!r}", path)
    out.uns["fold"] = fold_name
    return out


def fold_from_files(data, table, fold: dict, output, *, n_effect: int, n_pcs: int,
                    controls_in_training: bool = False) -> None:
    """The replogle_fold job: the training dataset of hold-out ``fold`` from the preprocessed
    ``data`` and Table S3 (``table``: its clusters choose the held-out perturbations, its
    expression programs go to ``uns["gene_sets"]`` for the enrichment), written to ``output``."""
    adata = read_dataset(data)
    clusters, _ = read_table_s3(table)
    heldout = fold_perturbations(adata, fold, clusters, n_effect=n_effect, n_pcs=n_pcs, path=data)
    dataset = make_fold(adata, heldout, fold["name"], keep_controls_in_training=controls_in_training, path=data)
    dataset.uns["gene_sets"] = expression_programs(table)
    write_h5ad(dataset, output)
