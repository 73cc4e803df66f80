"""Figures drawn with seaborn; method names and colours are the same in every figure."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .methods import DISPLAY_NAMES, METHODS  # noqa: E402

PALETTE = dict(zip(DISPLAY_NAMES.values(), sns.color_palette("colorblind", len(METHODS))))


def _with_models(summary: pd.DataFrame, by: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Display names added; the methods present in the paper's order; the datasets."""
    df = summary.assign(model=summary["method"].map(DISPLAY_NAMES))
    order = [DISPLAY_NAMES[m] for m in METHODS if m in set(df["method"])]
    return df, order, list(dict.fromkeys(df[by]))


def _box_strip(ax, data: pd.DataFrame, col: str, order: list[str]) -> None:
    """A box per method and one point per run (seed)."""
    kw = dict(data=data, x="model", y=col, order=order, hue="model", palette=PALETTE, ax=ax)
    sns.boxplot(**kw, fill=False, showfliers=False, legend=False)
    sns.stripplot(**kw, size=5, jitter=0.15, legend=False)


def _save(fig, paths) -> None:
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_methods(summary: pd.DataFrame, paths, by: str = "simulation") -> None:
    """Pearson MCC and target-graph F1 in two conventions per method, one point per run
    (one row per simulation): F1 after the |r| matching on the training perturbations, and
    the released code's (signed matching, all perturbations, held-out ones as misses).

    Methods without a value (VAE and β-VAE have no target graph) are marked, not dropped,
    so every panel has the same axis.
    """
    df, order, sims = _with_models(summary, by)
    panels = [("mcc_pearson", "Pearson MCC"), ("graph_f1", "graph F1 (|r|, training)"),
              ("graph_f1_signed", "graph F1 (signed, all)")]
    if "graph_f1_signed" not in df:
        df["graph_f1_signed"] = np.nan
    fig, axes = plt.subplots(len(sims), len(panels), figsize=(13, 3.4 * len(sims)), squeeze=False)
    for row, sim in zip(axes, sims):
        sub = df[df[by] == sim]
        for ax, (col, label) in zip(row, panels):
            data = sub.dropna(subset=[col])
            _box_strip(ax, data, col, order)
            ax.set(xlabel="", ylabel=label, ylim=(0, 1.02), title=f"{sim}: {label}")
            for i, name in enumerate(order):
                if name not in set(data["model"]):
                    ax.text(i, 0.03, "no target\ngraph" if col.startswith("graph") else "n/a",
                            ha="center", va="bottom", fontsize=8, color="0.4")
    _save(fig, paths)


def plot_inll(summary: pd.DataFrame, paths, by: str = "simulation") -> None:
    """Held-out I-NLL (-IWELBO per cell, lower is better) per method, one point per seed,
    one panel per dataset (a simulation, or a Replogle hold-out fold: the paper's Figure 3)."""
    df, order, sims = _with_models(summary, by)
    ncols = min(len(sims), 3)
    nrows = -(-len(sims) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(sims):]:
        ax.set_visible(False)
    for ax, sim in zip(axes.flat, sims):
        sub = df[df[by] == sim].dropna(subset=["inll"])
        _box_strip(ax, sub, "inll", order)
        particles = sorted(set(sub["n_particles"].dropna().astype(int)))
        ax.set(
            xlabel="",
            ylabel="held-out I-NLL (lower is better)",
            title=f"{sim}: −IWELBO, T = {', '.join(map(str, particles)) or '?'}",
        )
    _save(fig, paths)



def plot_gsea_dotplot(table: pd.DataFrame, paths, top: int = 3, max_terms: int = 40) -> None:
    """Latents × their ``top`` gene sets (lowest FDR, then largest |NES|; at most ``max_terms``
    rows, the most significant first): colour NES, size −log10 FDR."""
    fig, ax = plt.subplots(figsize=(8, 6))
    if table.empty:
        ax.text(0.5, 0.5, "no gene set could be tested", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, paths)
    best = table.assign(abs_nes=table["nes"].abs()).sort_values(["fdr", "abs_nes"], ascending=[True, False])
    terms = list(dict.fromkeys(best.groupby("latent").head(top)["term"]))[:max_terms]
    data = table[table["term"].isin(terms)].copy()
    data["−log10 FDR"] = -np.log10(data["fdr"].clip(lower=1e-3))
    data["NES"] = data["nes"]
    data["latent"] = data["latent"].astype(str)
    limit = float(data["nes"].abs().max()) or 1.0
    fig.set_size_inches(max(6, 0.45 * data["latent"].nunique() + 4), max(4, 0.3 * len(terms) + 1.5))
    sns.scatterplot(
        data=data, x="latent", y="term", hue="NES", size="−log10 FDR", palette="vlag",
        hue_norm=(-limit, limit), sizes=(10, 250), size_norm=(0, 3), ax=ax, edgecolor="0.3",
    )
    ax.set(xlabel="learned latent", ylabel="", title="gene-set enrichment of latent gene scores (GSEA)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    _save(fig, paths)


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def plot_latent_targets(table: pd.DataFrame, paths) -> None:
    """Heatmap: share of each perturbation group targeting each latent; * where FDR < 0.05."""
    fig, ax = plt.subplots(figsize=(8, 5))
    if table.empty:
        ax.text(0.5, 0.5, "no learned target graph", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, paths)
    share = table.assign(share=table["overlap"] / table["n_group"]).pivot(
        index="group", columns="latent", values="share")
    share = share.loc[sorted(share.index, key=_natural)]  # "z2" before "z10"
    stars = table.pivot(index="group", columns="latent", values="fdr").lt(0.05).map(lambda s: "*" if s else "")
    fig.set_size_inches(max(6, 0.5 * share.shape[1] + 3), max(3, 0.35 * share.shape[0] + 1.5))
    sns.heatmap(share, vmin=0, vmax=1, cmap="rocket_r", annot=stars.loc[share.index, share.columns],
                fmt="", cbar_kws={"label": "share of the group's perturbations targeting the latent"}, ax=ax)
    ax.set(xlabel="learned latent", ylabel="perturbation group", title="latent targets (* FDR < 0.05)")
    _save(fig, paths)
