"""Figures of the runs of one dataset and seed (the ``run_figure`` rule): the learned target
graphs against the truth, the shift heatmap (Figure 2) and the training curves; and
:func:`run_figure_from_files`, the job that draws one of them from the runs' files. See
:mod:`.plotting` for what every figure shares."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from scipy.cluster import hierarchy

from . import metrics
from .methods import DISPLAY_NAMES, GRAPH_METHODS, METHODS, REGISTRY
from .model import SparseShiftVAE
from .plotting import (
    colour_of, display_name, empty_panel, join_notes, method_order, names_of, save_figure,
)
from .data import dataset_perturbations, load_latents, perturbation_labels, trained_perturbations, training_cells
from .io import read_dataset

def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def permute_to_truth(z_true: np.ndarray, z_learned: np.ndarray, graph: np.ndarray) -> np.ndarray:
    """The learned graph (K, p_learned) with its columns in the truth's latent order.

    Latents are matched by the Pearson MCC matching (:func:`metrics.match_latents`):
    column j holds the learned latent matched to true latent j (zeros where no learned
    latent is matched, i.e. p_learned < p_true); unmatched learned latents are appended
    after the p_true columns in increasing index order.
    """
    z_true = np.asarray(z_true)
    _, rows, cols = metrics.match_latents(z_true, z_learned, "pearson")
    return metrics.permute_graph(np.asarray(graph), rows, cols, z_true.shape[1])


def _graph_ticks(ax, perturbations: list[str], n_cols: int) -> None:
    k = len(perturbations)
    step = 1 if k <= 40 else 10
    ticks = np.arange(0, k, step)
    ax.set_yticks(ticks + 0.5, [perturbations[i] for i in ticks], fontsize=7 if step == 1 else 8)
    cstep = 1 if n_cols <= 30 else 5
    cticks = np.arange(0, n_cols, cstep)
    ax.set_xticks(cticks + 0.5, [str(c) for c in cticks], fontsize=7, rotation=90 if n_cols > 20 else 0)
    ax.tick_params(length=0)


def plot_target_graphs(
    true_targets: np.ndarray,
    learned: Mapping[str, np.ndarray | None],
    perturbations: Sequence[str],
    paths,
    heldout: Sequence[str] | None = None,
) -> str:
    """Binary heatmaps of the true graph and of each learned graph (keys: method ids),
    perturbations on rows, latents on columns.

    The learned graphs must already be in the truth's latent order (:func:`permute_to_truth`);
    columns past the truth's p (unmatched learned latents) are set off by a line.
    Held-out perturbations (never trained: their learned rows mean nothing) are hatched.
    Note: graph methods (iVAE, sVAE, sVAE+) without a graph, graphs of the wrong height,
    perturbation names that do not match, held-out names not among the perturbations.
    """
    truth = np.asarray(true_targets).astype(float)
    perturbations = [str(p) for p in perturbations]
    notes = []
    if truth.ndim != 2:
        truth = np.zeros((len(perturbations), 0))
        notes.append("true graph is not 2-D")
    k, p_true = truth.shape
    if len(perturbations) != k:
        notes.append(f"{len(perturbations)} perturbation names for {k} rows")
        perturbations = (perturbations + [str(i) for i in range(len(perturbations), k)])[:k]
    panels = [("truth", truth, None)]
    keys = method_order([key for key in learned])
    for key in keys:
        g = learned[key]
        if g is None:
            if key in GRAPH_METHODS:
                notes.append(f"no graph of {display_name(key)}")
            continue
        g = np.asarray(g, dtype=float)
        if g.ndim != 2 or g.shape[0] != k:
            notes.append(f"{display_name(key)} graph has shape {g.shape}, not ({k}, ·)")
            panels.append((display_name(key), None, key))
            continue
        panels.append((display_name(key), (g != 0).astype(float), key))
    missing = [m for m in GRAPH_METHODS if m not in keys]
    if missing:
        notes.append(f"no graph of {names_of(missing)}")
    held = [str(h) for h in (heldout or [])]
    unknown = [h for h in held if h not in perturbations]
    if unknown:
        notes.append(f"{len(unknown)} held-out name(s) not among the perturbations")
    held_rows = [i for i, name in enumerate(perturbations) if name in set(held)]

    widths = [max(g.shape[1] if g is not None else p_true, 1) for _, g, _ in panels]
    label_w = 0.09 * max([len(s) for s in perturbations] + [4]) + 0.5
    cell_w = 0.2 if max(widths) <= 30 else 0.12
    height = min(max(0.1 * k, 3.0), 14.0) + 1.4
    fig_w = label_w + sum(cell_w * w + 0.35 for w in widths) + 1.2
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_w, height), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    cmap = ListedColormap(["#f2f2f2", "#1f3a5f"])
    for i, (ax, (title, g, key)) in enumerate(zip(axes[0], panels)):
        colour = "black" if key is None else colour_of(key)
        ax.set_title(title, fontsize=10, fontweight="bold", color=colour)
        if g is None or g.size == 0:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no graph\nof this shape", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="0.4", rotation=90)
            continue
        n_cols = g.shape[1]
        ax.pcolormesh(g, cmap=cmap, vmin=0, vmax=1, edgecolors="white" if k <= 60 else "none",
                      linewidth=0.3)
        if k > 60:  # rows too dense for a full grid: every latent, every 10th perturbation
            for c in range(1, n_cols):
                ax.axvline(c, color="white", linewidth=0.4)
            for r in range(10, k, 10):
                ax.axhline(r, color="white", linewidth=0.6)
        ax.set_xlim(0, n_cols)
        ax.set_ylim(k, 0)
        _graph_ticks(ax, perturbations, n_cols)
        if i > 0:
            ax.set_yticklabels([])
        if n_cols > p_true and key is not None:
            ax.axvline(p_true, color="crimson", linewidth=1.2)
            ax.text(p_true + (n_cols - p_true) / 2, -0.5, "unmatched", ha="center", va="bottom",
                    fontsize=6, color="crimson", clip_on=False)
        for r in held_rows:
            ax.add_patch(Rectangle((0, r), n_cols, 1, facecolor="none", edgecolor="#c0392b",
                                   hatch="////", linewidth=0, alpha=0.6))
        if held_rows:
            edges = sorted({r for r in held_rows} | {r + 1 for r in held_rows})
            for r in edges:
                if (r in held_rows) != (r - 1 in held_rows):
                    ax.axhline(r, color="#c0392b", linewidth=0.9)
        ax.set_xlabel("latent (true order)" if key is None else "latent (matched)", fontsize=8)
        for spine in ax.spines.values():
            spine.set_linewidth(0.5)
    axes[0][0].set_ylabel("perturbation", fontsize=9)
    handles = [Patch(facecolor="#1f3a5f", label="targets the latent"),
               Patch(facecolor="#f2f2f2", edgecolor="0.7", label="no edge")]
    if held_rows:
        handles.append(Patch(facecolor="white", edgecolor="#c0392b", hatch="////",
                             label=f"held out ({len(held_rows)}, never trained)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return join_notes(notes)


# ----------------------------------------------------------------------------- shift heatmap


def plot_shift_heatmap(
    shifts: np.ndarray,
    perturbations: Sequence[str],
    paths,
    title: str = "learned latent shifts μ ⊙ mask",
    heldout: Sequence[str] | None = None,
) -> str:
    """Figure 2: clustered heatmap of the learned shifts (K perturbations × p latents);
    rows clustered (average linkage, Euclidean), columns in latent order, diverging
    colours centred at 0. Held-out perturbations, if given, are marked "*".

    Note: fewer than 2 perturbations (not clustered), missing (NaN) shifts, name mismatch.
    """
    shifts = np.asarray(shifts, dtype=float)
    notes = []
    if shifts.ndim != 2 or shifts.size == 0:
        fig, ax = plt.subplots(figsize=(5, 3))
        empty_panel(ax, "no learned shift to draw")
        save_figure(fig, paths)
        return "no learned shift"
    k, p = shifts.shape
    names = [str(s) for s in perturbations]
    if len(names) != k:
        notes.append(f"{len(names)} perturbation names for {k} rows")
        names = (names + [str(i) for i in range(len(names), k)])[:k]
    held = {str(h) for h in (heldout or [])}
    labels = [f"{n} *" if n in held else n for n in names]
    n_nan = int(np.isnan(shifts).sum())
    if n_nan:
        notes.append(f"{n_nan} missing shift value(s) (grey; 0 for clustering)")
    frame = pd.DataFrame(shifts, index=labels, columns=[str(j) for j in range(p)])
    limit = float(np.nanmax(np.abs(shifts))) if np.isfinite(shifts).any() else 1.0
    limit = limit or 1.0
    cluster = k >= 2
    if not cluster:
        notes.append("fewer than 2 perturbations: rows not clustered")
    # Rows clustered by scipy's average linkage on Euclidean distances (missing values as 0).
    linkage = (hierarchy.linkage(np.nan_to_num(shifts), method="average", metric="euclidean")
               if cluster else None)
    step = 1 if k <= 120 else math.ceil(k / 60)
    font = 8 if k <= 40 else 6
    label_w = 0.07 * max(len(s) for s in labels) * font / 8 + 0.3
    height = min(max(0.12 * min(k, 120) * (font / 6) * (0.8 if k > 40 else 1.0), 3.0), 16.0) + 1.8
    width = 0.32 * p + label_w + 2.2
    with warnings.catch_warnings():  # seaborn's own use of Colormap.set_bad
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        grid = sns.clustermap(
            frame, mask=frame.isna(), row_cluster=cluster, col_cluster=False, row_linkage=linkage,
            cmap="vlag", center=0, vmin=-limit, vmax=limit, figsize=(width, height),
            yticklabels=step, xticklabels=1, dendrogram_ratio=(min(0.15, 1.6 / width), 0.01),
            cbar_pos=(0.3, 0.0, 0.4, 0.01),
            cbar_kws={"label": "shift (prior sd)", "orientation": "horizontal"},
            linewidths=0.3 if k <= 60 else 0, linecolor="white",
        )
    ax = grid.ax_heatmap
    ax.set_facecolor("0.55")  # missing values (masked cells)
    ax.tick_params(axis="y", labelsize=font, length=0)
    ax.tick_params(axis="x", labelsize=8, rotation=0, length=0)
    ax.set_xlabel("latent", fontsize=9)
    ax.set_ylabel("perturbation" + (" (* held out)" if held & set(names) else ""), fontsize=9)
    fig = grid.figure
    heat = ax.get_position()
    fig.text(heat.x0 + heat.width / 2, heat.y1 + 0.15 / height, title, ha="center", va="bottom", fontsize=11)
    # The colour bar, horizontal, centred under the heatmap below the x label (saved with
    # bbox_inches="tight", so whatever lies below the canvas is kept).
    grid.ax_cbar.set_position([heat.x0 + 0.2 * heat.width, heat.y0 - 0.75 / height,
                               0.6 * heat.width, 0.12 / height])
    grid.ax_cbar.xaxis.label.set_size(8)
    grid.ax_cbar.tick_params(labelsize=7)
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return join_notes(notes)


# ----------------------------------------------------------------------------- training curves


def _elbo_limits(frames: list[pd.DataFrame]) -> tuple[float, float] | None:
    """1st–99th percentile of the ELBOs after the KL warm-up (or after the first fifth)."""
    values = []
    for h in frames:
        warmed = "kl_weight" in h and (h["kl_weight"] >= 1).any()
        after = h[h["kl_weight"] >= 1] if warmed else h.iloc[len(h) // 5:]
        for col in ("elbo_train", "elbo_val"):
            if col in after:
                values.append(pd.to_numeric(after[col], errors="coerce").to_numpy(dtype=float))
    values = np.concatenate(values) if values else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [1, 99])
    pad = 0.08 * (hi - lo) or 1.0
    return lo - pad, hi + pad


def plot_training_curves(histories: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]], paths) -> str:
    """ELBO per epoch (training solid, validation dashed; nats per cell; y clipped to the
    1st–99th percentile after warm-up) and mask density per epoch for the methods that
    learn a mask; one colour per method. A value may be a list of histories (seeds).

    Note: methods without a history, histories without the ELBO columns, sVAE / sVAE+
    without mask density.
    """
    fig, (ax_elbo, ax_mask) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
    notes = []
    keys = method_order(histories)
    missing = [m for m in METHODS if m not in keys]
    if missing:
        notes.append(f"no history of {names_of(missing)}")
    runs: dict[str, list[pd.DataFrame]] = {}
    for key in keys:
        value = histories[key]
        frames = [value] if isinstance(value, pd.DataFrame) else list(value or [])
        frames = [f for f in frames if isinstance(f, pd.DataFrame) and not f.empty]
        if not frames:
            notes.append(f"empty history of {display_name(key)}")
            continue
        frames = [f if "epoch" in f else f.assign(epoch=np.arange(1, len(f) + 1)) for f in frames]
        runs[key] = frames
    elbo_runs = {k: v for k, v in runs.items() if any(c in f for f in v for c in ("elbo_train", "elbo_val"))}
    no_elbo = [k for k in runs if k not in elbo_runs]
    if no_elbo:
        notes.append(f"no ELBO for {names_of(no_elbo)}")
    no_val = [k for k, v in elbo_runs.items()
              if not any("elbo_val" in f and f["elbo_val"].notna().any() for f in v)]
    if no_val:
        notes.append(f"no validation ELBO for {names_of(no_val)}")

    if elbo_runs:
        for key, frames in elbo_runs.items():
            for f in frames:
                for col, style in (("elbo_train", "-"), ("elbo_val", "--")):
                    if col in f:
                        ax_elbo.plot(f["epoch"], pd.to_numeric(f[col], errors="coerce"), color=colour_of(key),
                                     linestyle=style, linewidth=1.2, alpha=0.9 if len(frames) == 1 else 0.6)
        limits = _elbo_limits([f for v in elbo_runs.values() for f in v])
        if limits:
            ax_elbo.set_ylim(*limits)
        ax_elbo.set(xlabel="epoch", ylabel="ELBO (nats per cell, higher is better)",
                    title="ELBO per epoch (y: 1st–99th percentile after warm-up)")
        ax_elbo.title.set_fontsize(10)
        warm = [f["epoch"][f["kl_weight"] < 1].max() for v in elbo_runs.values() for f in v
                if "kl_weight" in f and (f["kl_weight"] < 1).any()]
        if warm:
            ax_elbo.axvline(max(warm), color="0.6", linewidth=0.8, linestyle=":")
    else:
        empty_panel(ax_elbo, "no ELBO history to draw")

    mask_runs = {k: v for k, v in runs.items()
                 if any("mask_density" in f and _numeric(f["mask_density"]).notna().any() for f in v)}
    no_mask = [m for m in runs if m in REGISTRY and REGISTRY[m].learns_mask and m not in mask_runs]
    if no_mask:
        notes.append(f"no mask density for {names_of(no_mask)}")
    if mask_runs:
        for key, frames in mask_runs.items():
            for f in frames:
                ax_mask.plot(f["epoch"], _numeric(f["mask_density"]), color=colour_of(key),
                             linewidth=1.4, alpha=0.9 if len(frames) == 1 else 0.6)
        ax_mask.set(xlabel="epoch", ylabel="mask density (share of edges kept)", ylim=(0, 1.02),
                    title="target mask density per epoch")
        ax_mask.title.set_fontsize(10)
    else:
        empty_panel(ax_mask, "no learned mask\n(no sVAE or sVAE+ history with a mask density)")
    # One legend for both panels, under them.
    handles = [Line2D([], [], color=colour_of(k), linewidth=2, label=display_name(k)) for k in runs]
    if elbo_runs:
        handles += [Line2D([], [], color="0.3", linestyle="-", label="training"),
                    Line2D([], [], color="0.3", linestyle="--", label="validation")]
        if warm:
            handles.append(Line2D([], [], color="0.6", linestyle=":", label="end of KL warm-up"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.07 * math.ceil(len(handles) / 9), 1, 1))
    else:
        fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return join_notes(notes)


def run_figure_from_files(figure: str, data_path, runs: dict, paths) -> str:
    """One figure of the runs of a simulation and seed; ``runs``: method -> run folder."""
    adata = read_dataset(data_path)
    train = training_cells(adata)
    perturbation_labels(adata, data_path)  # checked
    names, _ = dataset_perturbations(adata, data_path)  # the rows of the target graphs
    if figure == "training_curves":
        histories = {m: pd.read_csv(Path(d) / "history.tsv", sep="\t") for m, d in runs.items()}
        return plot_training_curves(histories, paths)
    models = {m: SparseShiftVAE.load(Path(d) / "model.pt", Path(d) / "model.json") for m, d in runs.items()}
    trained = set(trained_perturbations(adata, data_path).tolist())
    heldout = sorted(n for i, n in enumerate(names) if i not in trained)
    if figure == "target_graphs":
        z_true = np.asarray(adata.obsm["z_true"])[train]
        learned = {}
        for method in GRAPH_METHODS:
            if method in models:
                z_hat = load_latents(Path(runs[method]) / "latents.npz")[train]
                graph = models[method].prior.target_graph().numpy()
                learned[method] = permute_to_truth(z_true, z_hat, graph)
        targets = np.asarray(adata.uns["targets"]).astype(bool)
        return plot_target_graphs(targets, learned, names, paths, heldout=heldout)
    # shift_heatmap: the learned shifts mu * mask of the last method of the registry that learns
    # shifts (sVAE+, else sVAE, else iVAE)
    method = next((m for m in reversed(METHODS) if m in models and models[m].prior.learned_shifts() is not None),
                  None)
    if method is None:
        return plot_shift_heatmap(np.zeros((0, 0)), [], paths, title="no model with learned shifts")
    shifts = models[method].prior.learned_shifts().numpy()
    learned_rows = [i for i, n in enumerate(names) if n not in set(heldout)]
    title = f"learned latent shifts μ ⊙ mask, {DISPLAY_NAMES[method]} (training perturbations)"
    return plot_shift_heatmap(shifts[learned_rows], [names[i] for i in learned_rows], paths, title=title)

