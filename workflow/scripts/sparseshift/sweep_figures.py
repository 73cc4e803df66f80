"""Figures of the sweeps of an arm's summary: Table 4 (a metric against the number of
latents) and Figure 4 (sVAE+ against α). See :mod:`.plotting` for what every figure shares."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .methods import METHODS, with_hyperparameter
from .plotting import (
    colour_of, display_name, empty_panel, empty_panels, join_notes, method_order, names_of, save_figure,
)

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
        empty_panel(ax, f"no column {', '.join(needed)} in the summary: nothing to draw")
        save_figure(fig, paths)
        return f"no column {', '.join(needed)}"
    df = summary.assign(n_latent=pd.to_numeric(summary["n_latent"], errors="coerce"),
                        **{metric: pd.to_numeric(summary[metric], errors="coerce")})
    df = df.dropna(subset=["n_latent"])
    if "seed" not in df:
        df["seed"] = np.arange(len(df))
    notes = []
    methods = method_order(df["method"])
    missing = [m for m in METHODS if m not in methods]
    if missing:
        notes.append(f"no run of {names_of(missing)}")
    no_value = [m for m in methods if df.loc[df["method"] == m, metric].isna().all()]
    if no_value:
        notes.append(f"no {SHORT_LABELS.get(metric, metric)} for {names_of(no_value)}")
    data = df.dropna(subset=[metric])
    ps = sorted(set(data["n_latent"]))
    if not ps:
        empty_panel(ax, f"no {SHORT_LABELS.get(metric, metric)} value: nothing to draw")
        save_figure(fig, paths)
        return join_notes(notes + [f"no {SHORT_LABELS.get(metric, metric)} value"])
    if len(ps) == 1:
        notes.append(f"only p = {_fmt(ps[0])} (no sweep)")
    drawn = [m for m in methods if m not in no_value]
    for m in drawn:
        lacking = [p for p in ps if not ((data["method"] == m) & (data["n_latent"] == p)).any()]
        if lacking:
            notes.append(f"{display_name(m)}: no p = {', '.join(_fmt(p) for p in lacking)}")
    notes += _seed_note(data, ["method", "n_latent"], lambda k: f"{display_name(k[0])} p = {_fmt(k[1])}")
    dup = data.groupby(["method", "n_latent", "seed"]).size()
    pooled = sorted({(m, p) for (m, p, _), n in dup.items() if n > 1})
    if pooled:
        notes.append("several runs per seed pooled: "
                     + ", ".join(f"{display_name(m)} p = {_fmt(p)}" for m, p in pooled))

    pos = {p: i for i, p in enumerate(ps)}
    width = 0.6 / max(len(drawn), 1)
    rng = np.random.default_rng(0)
    for i, m in enumerate(drawn):
        sub = data[data["method"] == m]
        _mean_sd_points(ax, pos.get, sub, "n_latent", metric, colour_of(m), display_name(m),
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
    save_figure(fig, paths)
    return join_notes(notes)


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
    method = with_hyperparameter("alpha")[0]  # sVAE+
    colour = colour_of(method)
    if "method" not in summary or "alpha" not in summary:
        empty_panels(axes, "no method / alpha column in the summary: nothing to draw")
        save_figure(fig, paths)
        return "no method or alpha column"
    df = summary[summary["method"] == method].copy()
    df["alpha"] = pd.to_numeric(df["alpha"], errors="coerce")
    df = df.dropna(subset=["alpha"])
    if df.empty:
        empty_panels(axes, "no sVAE+ run with an α: nothing to draw")
        save_figure(fig, paths)
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
            empty_panel(ax, f"no {short} for sVAE+")
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
        save_figure(fig, paths)
    return join_notes(notes)
