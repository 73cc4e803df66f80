"""Figures of the paper: Table 1 rendered, the latent (Table 4) and α (Figure 4) sweeps,
learned target graphs, the shift heatmap (Figure 2) and training curves.

Every ``plot_*`` function is pure: it takes data frames / arrays and a list of output
paths, draws one figure, saves it to every path (dpi 150) and returns a short note
naming what is missing ("" when nothing is). Missing methods, seeds, sweep values or
columns never raise: what is there is drawn, the rest is named in the note, and a
figure with nothing to draw says so in the figure itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from scipy.cluster import hierarchy

from . import metrics, plots
from .methods import DISPLAY_NAMES, METHODS
from .plots import PALETTE, _save

__all__ = [
    "FIGURES",
    "GRAPH_METHODS",
    "TABLE1_PAPER_COLUMNS",
    "permute_to_truth",
    "plot_alpha_sweep",
    "plot_latent_sweep",
    "plot_shift_heatmap",
    "plot_table1",
    "plot_target_graphs",
    "plot_training_curves",
]

# Methods whose prior learns a perturbation -> latent target graph.
GRAPH_METHODS = ("ivae", "svae", "svae_plus")
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
METRIC_LABELS = {
    "mcc_pearson": "Pearson MCC (higher is better)",
    "mcc_spearman": "Spearman MCC (higher is better)",
    "r2": "R² of true on learned latents (higher is better)",
    "graph_precision": "target graph precision",
    "graph_recall": "target graph recall",
    "graph_f1": "target graph F1, |r| matching, training perturbations (higher is better)",
    "graph_f1_signed": "target graph F1, signed matching, all perturbations (released code)",
    "graph_auprc": "target graph AUPRC",
    "elbo_val": "validation ELBO (nats per cell, higher is better)",
    "inll": "held-out I-NLL (nats per cell, lower is better)",
}
SHORT_LABELS = {
    "mcc_pearson": "Pearson MCC",
    "mcc_spearman": "Spearman MCC",
    "r2": "R²",
    "graph_f1": "F1",
    "inll": "I-NLL",
    "elbo_val": "validation ELBO",
}
OTHER_COLOUR = "0.35"  # a key that is not one of the five methods


# ----------------------------------------------------------------------------- helpers


def _name(method) -> str:
    """Display name of a method id (unknown ids as they are)."""
    return DISPLAY_NAMES.get(str(method), str(method))


def _colour(method):
    return PALETTE.get(_name(method), OTHER_COLOUR)


def _order(methods) -> list[str]:
    """Method ids present, in the paper's order, then any other ids as given."""
    present = list(dict.fromkeys(str(m) for m in methods))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def _names(methods) -> str:
    return ", ".join(_name(m) for m in methods)


def _join(parts) -> str:
    return "; ".join(p for p in parts if p)


def _nothing(ax, text: str) -> None:
    """An empty panel that says why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="0.3", wrap=True,
            transform=ax.transAxes)
    ax.set_axis_off()


def _nothing_all(axes, text: str) -> None:
    """Every panel empty: the reason once, in the middle one."""
    axes = list(np.ravel(axes))
    for ax in axes:
        ax.set_axis_off()
    _nothing(axes[len(axes) // 2], text)


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def _fmt(value) -> str:
    """A sweep value without a spurious '.0'."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _seed_note(df: pd.DataFrame, group: list[str], label) -> list[str]:
    """'<label>: 3 of 5 seeds' for each group with fewer seeds than the most complete one."""
    if "seed" not in df or df.empty:
        return []
    counts = df.groupby(group, sort=False)["seed"].nunique()
    full = counts.max()
    return [f"{label(key)}: {n} of {full} seeds" for key, n in counts.items() if n < full]


# ----------------------------------------------------------------------------- Table 1


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
    paper = {_name(k): dict(v) for k, v in (paper or {}).items()}  # method ids accepted too
    df = table1.copy()
    if by not in df:
        df[by] = ""
    if "method" not in df:
        inverse = {v: k for k, v in DISPLAY_NAMES.items()}
        df["method"] = df["model"].map(inverse).fillna(df["model"]) if "model" in df else "?"
    if "model" not in df:
        df["model"] = df["method"].map(_name)
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
        order = _order(sub["method"])
        prefix = f"{ds}: " if len(datasets) > 1 else ""
        missing = [m for m in METHODS if m not in order]
        if missing:
            notes.append(f"{prefix}no row of {_names(missing)}")
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
                and not (col in GRAPH_COLUMNS and m in ("vae", "beta_vae"))
            ]
            if lacking:
                notes.append(f"{prefix}no {col} for {_names(lacking)}")
        rows, kinds = [], []
        for m in order:
            mrows = sub[sub["method"] == m]
            for _, r in mrows.iterrows():
                rows.append([str(r["model"]), str(r["run"]), str(r["seeds"])] + [str(r[c]) for c in columns])
                kinds.append(("ours", m))
            name = _name(m)
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
        _nothing(fig.add_subplot(), "table 1 is empty: no run to show")
        _save(fig, paths)
        return "no row in table 1"

    axes = fig.subplots(len(blocks), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (ds, rows, kinds) in zip(axes, blocks):
        ax.set_axis_off()
        title = f"{by}: {ds}" if str(ds) else "Table 1"
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        if not rows:
            _nothing(ax, "no run")
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
                cell.get_text().set_color(_colour(method))
    _save(fig, paths)
    return _join(notes)


# ----------------------------------------------------------------------------- sweeps


def _mean_sd_points(ax, xs_pos, data: pd.DataFrame, xcol: str, col: str, colour, label, marker="o",
                    linestyle="-", offset=0.0, log=False, jitter=0.0, rng=None) -> None:
    """Mean line with sd error bars, and one point per run, of ``col`` against ``xcol``."""
    stats = data.groupby(xcol)[col].agg(["mean", "std", "count"]).sort_index()
    x = np.array([xs_pos(v) for v in stats.index], dtype=float)
    x = x * offset if log else x + offset
    ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0.0), color=colour, marker=marker,
                linestyle=linestyle, linewidth=1.6, markersize=6, capsize=3, label=label, zorder=3)
    px = np.array([xs_pos(v) for v in data[xcol]], dtype=float)
    noise = rng.uniform(-jitter, jitter, size=len(px)) if rng is not None and jitter else 0.0
    px = px * offset * np.exp(noise) if log else px + offset + noise
    ax.scatter(px, data[col], s=14, color=colour, alpha=0.45, edgecolor="none", zorder=2)


def plot_latent_sweep(
    summary: pd.DataFrame, paths, metric: str = "mcc_pearson", by: str = "simulation"
) -> str:
    """Table 4: ``metric`` against the number of latents ``n_latent``, one colour per method,
    a point per run (seed) and the mean ± sd over seeds; x ticks are the p values present.

    All runs of a method at a p are pooled (several datasets, e.g. one simulation per p,
    are expected); the note says when one seed has several runs there (e.g. several α).
    Note: only one p, methods absent, methods without some p, fewer seeds, no value.
    """
    label = METRIC_LABELS.get(metric, metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    needed = [c for c in ("method", "n_latent", metric) if c not in summary]
    if needed:
        _nothing(ax, f"no column {', '.join(needed)} in the summary: nothing to draw")
        _save(fig, paths)
        return f"no column {', '.join(needed)}"
    df = summary.assign(n_latent=pd.to_numeric(summary["n_latent"], errors="coerce"),
                        **{metric: pd.to_numeric(summary[metric], errors="coerce")})
    df = df.dropna(subset=["n_latent"])
    if "seed" not in df:
        df["seed"] = np.arange(len(df))
    notes = []
    methods = _order(df["method"])
    missing = [m for m in METHODS if m not in methods]
    if missing:
        notes.append(f"no run of {_names(missing)}")
    no_value = [m for m in methods if df.loc[df["method"] == m, metric].isna().all()]
    if no_value:
        notes.append(f"no {SHORT_LABELS.get(metric, metric)} for {_names(no_value)}")
    data = df.dropna(subset=[metric])
    ps = sorted(set(data["n_latent"]))
    if not ps:
        _nothing(ax, f"no {SHORT_LABELS.get(metric, metric)} value: nothing to draw")
        _save(fig, paths)
        return _join(notes + [f"no {SHORT_LABELS.get(metric, metric)} value"])
    if len(ps) == 1:
        notes.append(f"only p = {_fmt(ps[0])} (no sweep)")
    drawn = [m for m in methods if m not in no_value]
    for m in drawn:
        lacking = [p for p in ps if not ((data["method"] == m) & (data["n_latent"] == p)).any()]
        if lacking:
            notes.append(f"{_name(m)}: no p = {', '.join(_fmt(p) for p in lacking)}")
    notes += _seed_note(data, ["method", "n_latent"], lambda k: f"{_name(k[0])} p = {_fmt(k[1])}")
    dup = data.groupby(["method", "n_latent", "seed"]).size()
    pooled = sorted({(m, p) for (m, p, _), n in dup.items() if n > 1})
    if pooled:
        notes.append("several runs per seed pooled: "
                     + ", ".join(f"{_name(m)} p = {_fmt(p)}" for m, p in pooled))

    pos = {p: i for i, p in enumerate(ps)}
    width = 0.6 / max(len(drawn), 1)
    rng = np.random.default_rng(0)
    for i, m in enumerate(drawn):
        sub = data[data["method"] == m]
        _mean_sd_points(ax, pos.get, sub, "n_latent", metric, _colour(m), _name(m),
                        offset=(i - (len(drawn) - 1) / 2) * width, jitter=width / 4, rng=rng)
    ax.set_xticks(range(len(ps)), [_fmt(p) for p in ps])
    ax.set_xlim(-0.6, len(ps) - 0.4)
    ax.set(xlabel="number of latents p", ylabel=label,
           title=f"{SHORT_LABELS.get(metric, metric)} against the number of latents")
    if metric.startswith(("mcc", "graph")):
        ax.set_ylim(0, 1.02)
    ax.legend(title="method", fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    if len(ps) == 1:
        ax.text(0.02, 0.02, "only one p: no sweep", transform=ax.transAxes, fontsize=8, color="0.4")
    _save(fig, paths)
    return _join(notes)


def plot_alpha_sweep(summary: pd.DataFrame, paths, by: str = "simulation") -> str:
    """Figure 4: sVAE+ Pearson MCC, I-NLL and R² against α (mean ± sd over seeds, a point per
    seed), one line per dataset (column ``by``; and per p when a dataset has several);
    log-scaled α when the values span more than a factor 10.

    Note: no sVAE+ run, a single α, fewer seeds at some α, a metric without values.
    """
    panels = [("mcc_pearson", "Pearson MCC (higher is better)"),
              ("inll", "held-out I-NLL (nats per cell,\nlower is better)"),
              ("r2", "R² of true on learned latents\n(higher is better)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    colour = _colour("svae_plus")
    if "method" not in summary or "alpha" not in summary:
        _nothing_all(axes, "no method / alpha column in the summary: nothing to draw")
        _save(fig, paths)
        return "no method or alpha column"
    df = summary[summary["method"] == "svae_plus"].copy()
    df["alpha"] = pd.to_numeric(df["alpha"], errors="coerce")
    df = df.dropna(subset=["alpha"])
    if df.empty:
        _nothing_all(axes, "no sVAE+ run with an α: nothing to draw")
        _save(fig, paths)
        return "no sVAE+ run"
    df[by] = df[by].fillna("").astype(str) if by in df else ""
    if "seed" not in df:
        df["seed"] = np.arange(len(df))
    if "n_latent" not in df:
        df["n_latent"] = np.nan
    several_p = df.groupby(by)["n_latent"].nunique().gt(1)
    df["line"] = [f"{d}, p = {_fmt(p)}" if several_p[d] else str(d) for d, p in zip(df[by], df["n_latent"])]
    lines = list(dict.fromkeys(df["line"]))
    notes = []
    alphas = sorted(set(df["alpha"]))
    if len(alphas) == 1:
        notes.append(f"only α = {_fmt(alphas[0])} (no sweep)")
    for line in lines:
        got = set(df.loc[df["line"] == line, "alpha"])
        lacking = [a for a in alphas if a not in got]
        if lacking:
            notes.append(f"{line}: no α = {', '.join(_fmt(a) for a in lacking)}")
    notes += _seed_note(df, ["line", "alpha"],
                        lambda k: (f"{k[0]} " if len(lines) > 1 else "") + f"α = {_fmt(k[1])}")
    log = alphas[0] > 0 and alphas[-1] / alphas[0] > 10
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    styles = ["-", "--", ":", "-."]
    rng = np.random.default_rng(0)
    for ax, (col, ylabel) in zip(axes, panels):
        vals = pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(np.nan, index=df.index)
        data = df.assign(**{col: vals}).dropna(subset=[col])
        short = SHORT_LABELS[col]
        if data.empty:
            notes.append(f"no {short}")
            _nothing(ax, f"no {short} for sVAE+")
            continue
        for i, line in enumerate(lines):
            sub = data[data["line"] == line]
            if sub.empty:
                if len(lines) > 1:
                    notes.append(f"{line}: no {short}")
                continue
            _mean_sd_points(ax, float, sub, "alpha", col, colour, line if len(lines) > 1 else "sVAE+",
                            marker=markers[i % len(markers)], linestyle=styles[i % len(styles)],
                            offset=1.0 if log else 0.0, log=log, jitter=0.03 if log else 0.0, rng=rng)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(alphas, [_fmt(a) for a in alphas])
        ax.minorticks_off()
        if len(alphas) > 6:
            ax.tick_params(axis="x", labelrotation=45)
        ax.set(xlabel="α (sparsity prior Beta(1, α))", ylabel=ylabel, title=f"sVAE+: {short}")
        if col == "mcc_pearson":
            ax.set_ylim(0, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(lines) > 1 and handles:
        fig.legend(handles, labels, title=by, loc="upper center", ncol=min(len(lines), 4),
                   bbox_to_anchor=(0.5, 1.0), fontsize=8)
        fig.set_size_inches(13, 3.9 + 0.35 * math.ceil(len(lines) / 4))
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.1 * math.ceil(len(lines) / 4)))
        for path in paths:
            fig.savefig(path, dpi=150)
        plt.close(fig)
    else:
        _save(fig, paths)
    return _join(notes)


# ----------------------------------------------------------------------------- target graphs


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
    keys = _order([key for key in learned])
    for key in keys:
        g = learned[key]
        if g is None:
            if key in GRAPH_METHODS:
                notes.append(f"no graph of {_name(key)}")
            continue
        g = np.asarray(g, dtype=float)
        if g.ndim != 2 or g.shape[0] != k:
            notes.append(f"{_name(key)} graph has shape {g.shape}, not ({k}, ·)")
            panels.append((_name(key), None, key))
            continue
        panels.append((_name(key), (g != 0).astype(float), key))
    missing = [m for m in GRAPH_METHODS if m not in keys]
    if missing:
        notes.append(f"no graph of {_names(missing)}")
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
        colour = "black" if key is None else _colour(key)
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
    return _join(notes)


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
        _nothing(ax, "no learned shift to draw")
        _save(fig, paths)
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
    return _join(notes)


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
    keys = _order(histories)
    missing = [m for m in METHODS if m not in keys]
    if missing:
        notes.append(f"no history of {_names(missing)}")
    runs: dict[str, list[pd.DataFrame]] = {}
    for key in keys:
        value = histories[key]
        frames = [value] if isinstance(value, pd.DataFrame) else list(value or [])
        frames = [f for f in frames if isinstance(f, pd.DataFrame) and not f.empty]
        if not frames:
            notes.append(f"empty history of {_name(key)}")
            continue
        frames = [f if "epoch" in f else f.assign(epoch=np.arange(1, len(f) + 1)) for f in frames]
        runs[key] = frames
    elbo_runs = {k: v for k, v in runs.items() if any(c in f for f in v for c in ("elbo_train", "elbo_val"))}
    no_elbo = [k for k in runs if k not in elbo_runs]
    if no_elbo:
        notes.append(f"no ELBO for {_names(no_elbo)}")
    no_val = [k for k, v in elbo_runs.items()
              if not any("elbo_val" in f and f["elbo_val"].notna().any() for f in v)]
    if no_val:
        notes.append(f"no validation ELBO for {_names(no_val)}")

    if elbo_runs:
        for key, frames in elbo_runs.items():
            for f in frames:
                for col, style in (("elbo_train", "-"), ("elbo_val", "--")):
                    if col in f:
                        ax_elbo.plot(f["epoch"], pd.to_numeric(f[col], errors="coerce"), color=_colour(key),
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
        _nothing(ax_elbo, "no ELBO history to draw")

    mask_runs = {k: v for k, v in runs.items()
                 if any("mask_density" in f and _numeric(f["mask_density"]).notna().any() for f in v)}
    no_mask = [m for m in ("svae", "svae_plus") if m in runs and m not in mask_runs]
    if no_mask:
        notes.append(f"no mask density for {_names(no_mask)}")
    if mask_runs:
        for key, frames in mask_runs.items():
            for f in frames:
                ax_mask.plot(f["epoch"], _numeric(f["mask_density"]), color=_colour(key),
                             linewidth=1.4, alpha=0.9 if len(frames) == 1 else 0.6)
        ax_mask.set(xlabel="epoch", ylabel="mask density (share of edges kept)", ylim=(0, 1.02),
                    title="target mask density per epoch")
        ax_mask.title.set_fontsize(10)
    else:
        _nothing(ax_mask, "no learned mask\n(no sVAE or sVAE+ history with a mask density)")
    # One legend for both panels, under them.
    handles = [Line2D([], [], color=_colour(k), linewidth=2, label=_name(k)) for k in runs]
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
    return _join(notes)


# Figures of an arm's summary.tsv by name (the ``plot`` rule's {figure}, Table 1 aside),
# called as ``FIGURES[name](summary, paths, by=by)``.
FIGURES = {
    "methods": plots.plot_methods,
    "inll": plots.plot_inll,
    "latent_sweep": plot_latent_sweep,
    "alpha_sweep": plot_alpha_sweep,
}
