"""Figures drawn with seaborn; method names and colours are the same in every figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .model import DISPLAY_NAMES, METHODS  # noqa: E402

PALETTE = dict(zip(DISPLAY_NAMES.values(), sns.color_palette("colorblind", len(METHODS))))


def plot_methods(summary: pd.DataFrame, paths) -> None:
    """Pearson MCC and target-graph F1 per method, one point per seed (one row per simulation).

    Methods without a value (VAE and β-VAE have no target graph) are marked, not dropped,
    so every panel has the same axis.
    """
    df = summary.assign(model=summary["method"].map(DISPLAY_NAMES))
    order = [DISPLAY_NAMES[m] for m in METHODS if m in set(df["method"])]
    sims = list(dict.fromkeys(df["simulation"]))
    panels = [("mcc_pearson", "Pearson MCC"), ("graph_f1", "target graph F1")]
    fig, axes = plt.subplots(len(sims), 2, figsize=(9, 3.4 * len(sims)), squeeze=False)
    for row, sim in zip(axes, sims):
        sub = df[df["simulation"] == sim]
        for ax, (col, label) in zip(row, panels):
            data = sub.dropna(subset=[col])
            kw = dict(data=data, x="model", y=col, order=order, hue="model", palette=PALETTE, ax=ax)
            sns.boxplot(**kw, fill=False, showfliers=False, legend=False)
            sns.stripplot(**kw, size=5, jitter=0.15, legend=False)
            ax.set(xlabel="", ylabel=label, ylim=(0, 1.02), title=f"{sim}: {label}")
            for i, name in enumerate(order):
                if name not in set(data["model"]):
                    ax.text(i, 0.03, "no target\ngraph" if col == "graph_f1" else "n/a",
                            ha="center", va="bottom", fontsize=8, color="0.4")
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
