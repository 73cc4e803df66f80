"""Aggregation of per-run metrics into ``summary.tsv`` and the paper's Table 1 layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .methods import DISPLAY_NAMES, METHODS

# Identifiers of a run after the dataset column (``simulation``, or ``fold`` for Replogle).
ID_COLUMNS = ["method", "seed", "run", "n_latent", "alpha", "beta", "lambda"]
METRIC_COLUMNS = [
    "mcc_pearson",
    "mcc_spearman",
    "r2",
    "graph_precision",
    "graph_recall",
    "graph_f1",
    "graph_auprc",
    "elbo_val",
    "inll",
]
EXTRA_COLUMNS = [
    "graph_precision_all",
    "graph_recall_all",
    "graph_f1_all",
    "graph_auprc_all",
    "elbo_train",
    "elbo_heldout_before",
    "elbo_heldout_retrained",
    "iwelbo_heldout_retrained",
    "elbo_heldout",
    "iwelbo_heldout",
    "n_particles",
    "mask_density",
    "epochs_run",
    "seconds_per_epoch",
    "iwelbo_seconds",
    "device",
]
# Table 1 of the paper: column name -> metric.
TABLE1_COLUMNS = {
    "Pearson MCC": "mcc_pearson",
    "Spearman MCC": "mcc_spearman",
    "R²": "r2",
    "precision": "graph_precision",
    "recall": "graph_recall",
    "F1": "graph_f1",
    "AUPRC": "graph_auprc",
    "ELBO (val)": "elbo_val",
    "I-NLL": "inll",
}


def load_metrics(paths, by: str = "simulation") -> pd.DataFrame:
    """One row per run, identifier columns first (the dataset column ``by``), methods in
    the paper's order."""
    rows = []
    for path in paths:
        with open(path) as fh:
            rows.append(json.load(fh))
    df = pd.DataFrame(rows)
    columns = [by] + ID_COLUMNS + METRIC_COLUMNS + EXTRA_COLUMNS
    for col in columns:
        if col not in df:
            df[col] = np.nan
    order = {m: i for i, m in enumerate(METHODS)}
    return df[columns].sort_values(
        [by, "method", "run", "seed"], key=lambda s: s.map(order) if s.name == "method" else s
    ).reset_index(drop=True)


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def table1(summary: pd.DataFrame, by: str = "simulation") -> pd.DataFrame:
    """Mean ± sd over seeds per dataset (column ``by``), method and hyper-parameter setting."""
    keys = [by, "method", "run"]
    out = (
        summary.groupby(keys, sort=False)
        .agg(
            seeds=("seed", "nunique"),
            **{name: (col, _mean_sd) for name, col in TABLE1_COLUMNS.items()},
        )
        .reset_index()
    )
    out.insert(2, "model", out["method"].map(DISPLAY_NAMES))
    return out
