"""Figures of one screen (rule screen_figures), from its methods' exports: which latent factors
each perturbation targets, and the latent means of each perturbation's cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import leaves_list, linkage

from .methods import GRAPH_METHODS
from .plotting import display_name, empty_panel, method_order, plt, save_figure, sns

MAX_LABELS = 60  # perturbations named on an axis; more are drawn unlabelled


def pattern_order(matrix: np.ndarray) -> np.ndarray:
    """Rows ordered so that similar patterns sit together (average-linkage leaves)."""
    if len(matrix) < 3:
        return np.arange(len(matrix))
    return leaves_list(linkage(matrix, method="average", metric="euclidean"))


def target_matrix(targets: pd.DataFrame) -> pd.DataFrame:
    """Perturbation x latent scores of a targets table: the mask probability, or (iVAE) |shift|
    scaled to [0, 1] per perturbation; held-out perturbations marked with a star."""
    has_mask = targets["mask_probability"].notna().any()
    values = targets["mask_probability"] if has_mask else targets["shift"].abs()
    frame = targets.assign(value=values).pivot(index="perturbation", columns="latent", values="value")
    if not has_mask:
        frame = frame.div(frame.max(axis=1).replace(0, 1), axis=0)
    held = set(targets.loc[targets["split"] == "heldout", "perturbation"])
    frame.index = [f"{name} *" if name in held else name for name in frame.index]
    return frame


def _heatmap(ax, frame: pd.DataFrame, title: str, cmap: str, **kwargs) -> None:
    frame = frame.iloc[pattern_order(frame.to_numpy())]
    sns.heatmap(frame, ax=ax, cmap=cmap, yticklabels=len(frame) <= MAX_LABELS, **kwargs)
    ax.set(title=title, xlabel="latent", ylabel="perturbation")


def plot_targets(folder, methods, paths) -> None:
    """One heatmap per method with a target graph (sVAE, sVAE+: mask probability; iVAE: |shift|)."""
    shown = [m for m in method_order(methods) if m in GRAPH_METHODS]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.5 * max(1, len(shown)), 6), squeeze=False)
    if not shown:
        empty_panel(axes[0, 0], "no method of this screen learns targets (iVAE, sVAE, sVAE+)")
    for ax, method in zip(axes[0], shown):
        targets = pd.read_csv(Path(folder) / method / "targets.tsv", sep="\t")
        label = "|shift| / max" if targets["mask_probability"].isna().all() else "mask probability"
        _heatmap(ax, target_matrix(targets), f"{display_name(method)} (* held out)", "rocket_r", vmin=0, vmax=1,
                 cbar_kws={"label": label})
    save_figure(fig, paths)


def latent_means(adata, method: str) -> pd.DataFrame:
    """Mean posterior latent of each perturbation's cells."""
    z = pd.DataFrame(np.asarray(adata.obsm[f"X_{method}"]), index=adata.obs_names)
    return z.groupby(adata.obs["perturbation"].astype(str).to_numpy()).mean()


def plot_latent_means(folder, methods, paths) -> None:
    """One heatmap per method: the mean latent of each perturbation's cells."""
    import anndata

    shown = method_order(methods)
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 6), squeeze=False)
    for ax, method in zip(axes[0], shown):
        adata = anndata.read_h5ad(Path(folder) / method / "latents.h5ad")
        means = latent_means(adata, method)
        limit = float(np.abs(means.to_numpy()).max()) or 1.0
        _heatmap(ax, means, display_name(method), "vlag", vmin=-limit, vmax=limit, cbar_kws={"label": "mean latent"})
    save_figure(fig, paths)


def draw(figure: str, folder, methods, paths) -> None:
    """Figure ``figure`` (one of layout.SCREEN_FIGURES) of the screen in ``folder``."""
    {"targets": plot_targets, "latent_means": plot_latent_means}[figure](folder, methods, paths)
