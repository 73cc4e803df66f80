"""Figures of an arm's summary (the ``plot`` rule): Table 1 rendered, the methods' MCC and
graph F1, the held-out I-NLL, and :data:`FIGURES`, the summary figures by name (the sweeps
are in :mod:`.sweep_figures`). See :mod:`.plotting` for what every figure shares."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import io
from .layout import SUMMARY_FIGURES
from .methods import DISPLAY_NAMES, METHODS, REGISTRY
from .plotting import (
    PALETTE, colour_of, display_name, empty_panel, join_notes, method_order, names_of, save_figure,
)
from . import sweep_figures

# The metric columns of the paper's Table 1 (names as in ``summary.table1``): the graph
# metrics in two conventions, by |r| matching ("F1": training perturbations; "F1 (all)": all,
# held-out ones as misses) and the released code's signed one, which the paper's are comparable to.
TABLE1_PAPER_COLUMNS = [
    "Pearson MCC", "Spearman MCC", "R²", "F1", "F1 (all)",
    "precision (signed)", "recall (signed)", "F1 (signed)", "I-NLL",
]
GRAPH_COLUMNS = {
    "precision", "recall", "F1", "AUPRC", "F1 (all)", "precision (signed)", "recall (signed)", "F1 (signed)",
}


def plot_table1(
    table1: pd.DataFrame,
    paths,
    paper: Mapping[str, Mapping[str, str]] | None = None,
    by: str = "simulation",
    columns: Sequence[str] = TABLE1_PAPER_COLUMNS,
) -> str:
    """Table 1 rendered (``ax.table``, no axes): one table per dataset (column ``by``),
    stacked vertically; rows: model, run, seeds, then ``columns`` ("mean ± sd" strings).

    ``paper`` maps a display model name (or method id) to {column: published value}; each model with an
    entry gets a grey, italic "<model> (paper)" row under its own rows (other columns,
    e.g. "seeds", may be given too; absent ones stay blank).

    Note: datasets missing a method, runs with fewer seeds than the others, metric
    columns absent from ``table1``, and metrics shown as "–" for one method while other
    methods have them (the graph metrics of VAE / β-VAE, which have no graph, excepted).
    """
    paper = {display_name(k): dict(v) for k, v in (paper or {}).items()}  # method ids accepted too
    df = table1.copy()
    if by not in df:
        df[by] = ""
    if "method" not in df:
        inverse = {v: k for k, v in DISPLAY_NAMES.items()}
        df["method"] = df["model"].map(inverse).fillna(df["model"]) if "model" in df else "?"
    if "model" not in df:
        df["model"] = df["method"].map(display_name)
    notes = []
    absent = [c for c in columns if c not in df]
    if absent:
        notes.append(f"no column {', '.join(absent)}")
    for col in ["run", "seeds", *columns]:
        if col not in df:
            df[col] = "–"
    df = df.fillna("–")
    datasets = list(dict.fromkeys(df[by]))
    header = ["model", "run", "seeds", *columns]

    blocks = []  # (dataset, rows of cell strings, row kinds)
    for ds in datasets:
        sub = df[df[by] == ds]
        order = method_order(sub["method"])
        prefix = f"{ds}: " if len(datasets) > 1 else ""
        missing = [m for m in METHODS if m not in order]
        if missing:
            notes.append(f"{prefix}no row of {names_of(missing)}")
        seeds = pd.to_numeric(sub["seeds"], errors="coerce")
        if seeds.notna().any():
            full = int(seeds.max())
            for (_, r), n in zip(sub.iterrows(), seeds):
                if pd.notna(n) and n < full:
                    notes.append(f"{prefix}{r['model']} {r['run']}: {int(n)} of {full} seeds")
        for col in columns:
            if col in absent:
                continue
            has = sub[col].astype(str).str.strip().ne("–")
            if not has.any():
                continue
            lacking = [
                m for m in order
                if not has[sub["method"] == m].any()
                and not (col in GRAPH_COLUMNS and m in REGISTRY and not REGISTRY[m].learns_graph)
            ]
            if lacking:
                notes.append(f"{prefix}no {col} for {names_of(lacking)}")
        rows, kinds = [], []
        for m in order:
            mrows = sub[sub["method"] == m]
            for _, r in mrows.iterrows():
                rows.append([str(r["model"]), str(r["run"]), str(r["seeds"])] + [str(r[c]) for c in columns])
                kinds.append(("ours", m))
            name = display_name(m)
            if name in paper:
                ref = paper[name]
                rows.append([f"{name} (paper)", str(ref.get("run", "")), str(ref.get("seeds", ""))]
                            + [str(ref.get(c, "")) for c in columns])
                kinds.append(("paper", m))
        blocks.append((ds, rows, kinds))

    # Column widths from the longest string of each column (inches).
    cells = [header] + [row for _, rows, _ in blocks for row in rows]
    chars = [max(len(str(row[j])) for row in cells) for j in range(len(header))]
    widths = [0.075 * c + 0.25 for c in chars]
    row_h = 0.26
    heights = [row_h * (len(rows) + 1) + 0.45 for _, rows, _ in blocks] or [1.0]
    fig_w = max(sum(widths) + 0.3, 4.0)
    fig = plt.figure(figsize=(fig_w, sum(heights) + 0.2))
    if not blocks:
        empty_panel(fig.add_subplot(), "table 1 is empty: no run to show")
        save_figure(fig, paths)
        return "no row in table 1"

    axes = fig.subplots(len(blocks), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (ds, rows, kinds) in zip(axes, blocks):
        ax.set_axis_off()
        title = f"{by}: {ds}" if str(ds) else "Table 1"
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        if not rows:
            empty_panel(ax, "no run")
            continue
        tab = ax.table(cellText=rows, colLabels=header, colWidths=[w / sum(widths) for w in widths],
                       cellLoc="center", bbox=[0, 0, 1, 1])
        tab.auto_set_font_size(False)
        for (i, j), cell in tab.get_celld().items():
            cell.set_fontsize(8)
            cell.set_edgecolor("0.75")
            cell.set_linewidth(0.5)
            if i == 0:
                cell.set_facecolor("0.85")
                cell.get_text().set_fontweight("bold")
                continue
            kind, method = kinds[i - 1]
            if j == 0:
                cell.get_text().set_ha("left")
                cell.PAD = 0.04
            if kind == "paper":
                cell.set_facecolor("0.96")
                cell.get_text().set_color("0.35")
                cell.get_text().set_fontstyle("italic")
            elif j == 0:
                cell.get_text().set_fontweight("bold")
                cell.get_text().set_color(colour_of(method))
    save_figure(fig, paths)
    return join_notes(notes)


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
    save_figure(fig, paths)


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
    save_figure(fig, paths)


# Figures of an arm's summary.tsv by name (the ``plot`` rule's {figure}, Table 1 aside),
# called as ``FIGURES[name](summary, paths, by=by)``.
FIGURES = {
    name: globals().get(f"plot_{name}") or getattr(sweep_figures, f"plot_{name}")
    for name in SUMMARY_FIGURES
    if name != "table1"
}


def plot_from_files(figure: str, inputs, outputs, by: str, paper: dict | None = None) -> None:
    """The plot job: ``figure`` (``table1`` from ``inputs.table1`` beside the ``paper``'s values, else
    one of ``FIGURES`` from ``inputs.summary``) saved as ``outputs.png`` and ``outputs.pdf``; what a
    figure could not draw is logged as a warning."""
    with io.atomic_path(outputs.png) as png, io.atomic_path(outputs.pdf) as pdf:
        if figure == "table1":
            note = plot_table1(pd.read_csv(inputs.table1, sep="\t"), [png, pdf], paper=paper or None, by=by)
        else:
            note = FIGURES[figure](pd.read_csv(inputs.summary, sep="\t"), [png, pdf], by=by)
    if note:
        logging.getLogger("plot").warning("%s: %s", figure, note)
