"""Aggregation of per-run metrics into ``summary.tsv``, the unsupervised selection among
each method's settings (``selection.tsv``), what each criterion of that choice costs where the
truth is known (``regret.tsv``) and the paper's Table 1 layout.

Graph metrics come in three conventions (see :func:`sparseshift.runs.evaluate_run`):
``graph_*`` (latents matched by |r|, training perturbations), ``graph_*_all`` (|r|, all
perturbations, held-out ones as misses) and ``graph_*_signed`` (signed matching, all
perturbations: the released code's, to which the paper's Table 1 is comparable).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import io
from .methods import DISPLAY_NAMES, HYPERPARAMETERS, METHODS

# Identifiers of a run after the dataset column (``simulation``, or ``fold`` for Replogle).
ID_COLUMNS = ["method", "seed", "run", "n_latent", *sorted(HYPERPARAMETERS)]
METRIC_COLUMNS = [
    "mcc_pearson",
    "mcc_spearman",
    "r2",
    "graph_precision",
    "graph_recall",
    "graph_f1",
    "graph_auprc",
    "graph_precision_all",
    "graph_recall_all",
    "graph_f1_all",
    "graph_precision_signed",
    "graph_recall_signed",
    "graph_f1_signed",
    "elbo_val",
    "inll",
    "udr",
]
EXTRA_COLUMNS = [
    "selected",
    "udr_models",
    "graph_auprc_all",
    "graph_auprc_signed",
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
    "code_version",
    "train_code_version",
    "transfer_code_version",
]
# Table 1 of the paper: column name -> metric.
# Graph columns: "precision", "recall", "F1", "AUPRC": |r| matching, training perturbations;
# "F1 (all)": |r| matching, all perturbations; "... (signed)": the released code's convention.
TABLE1_COLUMNS = {
    "Pearson MCC": "mcc_pearson",
    "Spearman MCC": "mcc_spearman",
    "R²": "r2",
    "precision": "graph_precision",
    "recall": "graph_recall",
    "F1": "graph_f1",
    "F1 (all)": "graph_f1_all",
    "precision (signed)": "graph_precision_signed",
    "recall (signed)": "graph_recall_signed",
    "F1 (signed)": "graph_f1_signed",
    "AUPRC": "graph_auprc",
    "ELBO (val)": "elbo_val",
    "I-NLL": "inll",
    "UDR": "udr",
}
SELECTION_COLUMNS = ["seed", "method", "n_latent", "run", "candidates", "udr", "criterion", "score", "selected"]
# Few-shot transfer (transfer.few_shot): one column of each per k in the runs' metrics, in
# order of k, after EXTRA_COLUMNS; absent when no run has them.
FEW_SHOT_PATTERNS = ["inll_few_shot_k{}", "n_few_shot_cells_k{}"]


# Zero-shot prediction of held-out combinations and the targets of held-out perturbations
# under both step-3 variants (issue 29): present only when runs have them.
ZERO_SHOT_COLUMNS = ["inll_zero_shot", "inll_combinations", "graph_precision_zero_shot",
                     "graph_recall_zero_shot", "graph_f1_zero_shot"]
HELDOUT_TARGET_COLUMNS = ["inll_learned_masks", "heldout_mask_density_learned",
                          *(f"graph_{m}_heldout{v}" for v in ("", "_learned") for m in ("precision", "recall", "f1"))]
# The generalisation table: metric -> whether lower is better (I-NLL) or higher (target F1), in
# the table's order (the few-shot I-NLLs, lower, after inll_combinations).
GENERALISATION_METRICS = {"inll_zero_shot": True, "inll_combinations": True, "inll": True,
                          "inll_learned_masks": True, "graph_f1_zero_shot": False, "graph_f1_heldout": False,
                          "graph_f1_heldout_learned": False}
GENERALISATION_COLUMNS = ["metric", "method", "seeds", "mean", "sd", "per_seed", "better_seeds"]
# The criteria of the choice among a method's settings (none needs ground truth; each chooses
# the setting of highest value): UDR over the first r models of each setting and over all of
# them, the validation ELBO, the agreement of the models' target graphs. In summary.tsv when
# runs have them (udr_r<r>, mask_agreement), and compared in regret.tsv.
CRITERIA = ["udr_r2", "udr_r3", "udr_r5", "udr", "elbo_val", "mask_agreement"]
# How tables name the choice of each criterion of config key selection.criterion.
CRITERION_NAMES = {"udr": "UDR", "elbo_val": "ELBO (val)", "mask_agreement": "mask agreement"}
REGRET_CHOICE_COLUMNS = ["seed", "method", "n_latent", "criterion", "candidates", "chosen", "value",
                         "mcc_chosen", "best", "mcc_best", "regret"]
REGRET_COLUMNS = ["method", "criterion", "choices", "mcc_chosen", "mcc_best", "mean_regret", "max_regret",
                  "best_chosen"]
# sVAE+ is compared seed by seed with these methods.
COMPARED = ("ivae", "svae")


def few_shot_columns(columns) -> list[str]:
    """The few-shot columns among ``columns`` (``inll_few_shot_k<k>`` ...), by k."""
    ks = sorted({int(c[len("inll_few_shot_k"):]) for c in columns
                 if c.startswith("inll_few_shot_k") and c[len("inll_few_shot_k"):].isdigit()})
    return [pattern.format(k) for k in ks for pattern in FEW_SHOT_PATTERNS]


def load_metrics(paths, by: str = "simulation") -> pd.DataFrame:
    """One row per run, identifier columns first (the dataset column ``by``), methods in
    the paper's order."""
    rows = []
    for path in paths:
        with open(path) as fh:
            rows.append(json.load(fh))
    df = pd.DataFrame(rows)
    optional = [c for c in ZERO_SHOT_COLUMNS + HELDOUT_TARGET_COLUMNS if c in df] + few_shot_columns(df.columns)
    optional += [c for c in CRITERIA if c in df and c not in METRIC_COLUMNS]
    columns = [by] + ID_COLUMNS + METRIC_COLUMNS + EXTRA_COLUMNS + optional
    for col in columns:
        if col not in df:
            df[col] = np.nan
    order = {m: i for i, m in enumerate(METHODS)}
    # settings in numeric order (alpha 10, 20, ..., 100), not the order of their names
    return df[columns].sort_values(
        [by, "method", "n_latent", *sorted(HYPERPARAMETERS), "seed"],
        key=lambda s: s.map(order) if s.name == "method" else s,
    ).reset_index(drop=True)


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def select(summary: pd.DataFrame, by: str = "simulation", criterion: str = "udr") -> pd.DataFrame:
    """The unsupervised choice among a method's settings, per dataset, seed and latent
    dimension: the run of highest ``criterion`` (config key ``selection.criterion``, one of
    ``CRITERIA``; the first in run order on a tie); a method with one setting has nothing to
    choose. One row per candidate (``SELECTION_COLUMNS``: its UDR and its ``score``, the
    criterion's value).
    """
    rows = []
    for (dataset, seed, method, n_latent), group in summary.groupby(
        [by, "seed", "method", "n_latent"], sort=False
    ):
        score = group[criterion] if criterion in group else pd.Series(np.nan, index=group.index)
        if len(group) == 1:
            chosen = group.index[0]
        elif score.notna().any():
            chosen = score.idxmax()
        else:
            raise ValueError(
                f"{by} {dataset}, seed {seed}, {method}: {len(group)} settings to choose from "
                f"but none has a {criterion} score (selection.criterion; are the runs' replicates missing?)"
            )
        for idx, row in group.iterrows():
            rows.append({by: dataset, "seed": seed, "method": method, "n_latent": n_latent,
                         "run": row["run"], "candidates": len(group), "udr": row["udr"],
                         "criterion": criterion, "score": score[idx], "selected": idx == chosen})
    return pd.DataFrame(rows, columns=[by] + SELECTION_COLUMNS)


def with_selection(summary: pd.DataFrame, by: str = "simulation",
                   criterion: str = "udr") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``summary`` with its ``selected`` column filled, and the selection table."""
    selection = select(summary, by, criterion)
    keys = [by, "seed", "method", "run"]
    chosen = selection.loc[selection["selected"], keys].assign(selected=True)
    out = summary.drop(columns="selected").merge(chosen, on=keys, how="left")
    out["selected"] = out["selected"].eq(True)
    return out[summary.columns], selection


def _setting(run: str) -> str:
    """``p15_alpha40`` -> ``alpha40``; a run without a swept value -> ``p15``."""
    return run.split("_", 1)[1] if "_" in run else run


def _choices(runs: pd.DataFrame) -> str:
    """The settings chosen and how often; "one setting" when there was nothing to choose
    (no UDR score: no competitor)."""
    if runs["udr"].isna().all():
        return "one setting"
    counts = runs["run"].map(_setting).value_counts(sort=False)
    return ", ".join(f"{name} ×{n}" for name, n in counts.items())


def table1(summary: pd.DataFrame, by: str = "simulation", criterion: str = "udr") -> pd.DataFrame:
    """Mean ± sd over seeds per dataset (column ``by``), method and hyper-parameter setting
    (``selection`` "fixed"), then per dataset, method and latent dimension over the runs
    that the unsupervised selection chose (``selection``: the criterion's name in
    ``CRITERION_NAMES``, "UDR" by default; run ``p<n> selected``,
    ``chosen`` lists the settings chosen and how often), when ``summary`` has a
    ``selected`` column."""
    aggregations = {
        "seeds": ("seed", "nunique"),
        **{name: (col, _mean_sd) for name, col in TABLE1_COLUMNS.items()},
    }
    fixed = summary.groupby([by, "method", "run"], sort=False).agg(**aggregations).reset_index()
    fixed.insert(3, "selection", "fixed")
    fixed.insert(4, "chosen", "")
    blocks = [fixed]
    if "selected" in summary and summary["selected"].astype(bool).any():
        chosen = summary[summary["selected"].astype(bool)]
        groups = chosen.groupby([by, "method", "n_latent"], sort=False)
        sel = groups.agg(**aggregations).reset_index()
        sel.insert(3, "chosen", [_choices(group) for _, group in groups])
        sel.insert(2, "run", sel["n_latent"].map(lambda n: f"p{int(n)} selected"))
        sel.insert(3, "selection", CRITERION_NAMES[criterion])
        blocks.append(sel.drop(columns="n_latent")[fixed.columns])
    out = pd.concat(blocks, ignore_index=True)
    out.insert(2, "model", out["method"].map(DISPLAY_NAMES))
    return out


def generalisation(summary: pd.DataFrame, by: str = "simulation") -> pd.DataFrame:
    """How the selected runs predict what they did not see, per dataset: for each metric the
    runs have (zero-shot I-NLL of held-out combinations, the same cells after steps 2 and 3,
    few-shot I-NLL at each k, the full protocol's I-NLL, the zero-shot combinations' target F1),
    the I-NLL of step 3 with learned held-out masks and the held-out perturbations' target F1
    under both step-3 variants (masks set to 1, learned), one row per method (mean, sd over
    seeds, the values per seed), then per comparison of sVAE+
    with iVAE and sVAE the paired differences per seed (sVAE+ minus the other, on the seeds
    both have) and on how many seeds sVAE+ is the better (``better_seeds``: "n of m")."""
    runs = summary[summary["selected"].astype(bool)]
    few_shot = [c for c in few_shot_columns(runs.columns) if c.startswith("inll_")]
    names = ["inll_zero_shot", "inll_combinations", *few_shot, *list(GENERALISATION_METRICS)[2:]]
    metrics = {name: GENERALISATION_METRICS.get(name, True) for name in names}  # few-shot I-NLL: lower
    rows = []
    for dataset, group in runs.groupby(by, sort=False):
        for metric, lower in metrics.items():
            if metric not in group or group[metric].isna().all():
                continue
            values = group.pivot_table(index="seed", columns="method", values=metric)
            for method in [m for m in METHODS if m in values]:
                v = values[method].dropna()
                rows.append({by: dataset, "metric": metric, "method": method, "seeds": len(v),
                             "mean": v.mean(), "sd": v.std(ddof=1) if len(v) > 1 else np.nan,
                             "per_seed": " / ".join(f"{x:.2f}" for x in v), "better_seeds": ""})
            if "svae_plus" not in values:
                continue
            for other in [m for m in COMPARED if m in values]:
                diff = (values["svae_plus"] - values[other]).dropna()
                better = int((diff < 0).sum() if lower else (diff > 0).sum())
                rows.append({by: dataset, "metric": metric, "method": f"svae_plus - {other}", "seeds": len(diff),
                             "mean": diff.mean(), "sd": diff.std(ddof=1) if len(diff) > 1 else np.nan,
                             "per_seed": " / ".join(f"{x:+.2f}" for x in diff),
                             "better_seeds": f"{better} of {len(diff)}"})
    return pd.DataFrame(rows, columns=[by] + GENERALISATION_COLUMNS)


def regret(summary: pd.DataFrame, by: str = "simulation") -> tuple[pd.DataFrame, pd.DataFrame]:
    """What each criterion's choice among a method's settings costs where the truth is known:
    per dataset, seed, method and latent dimension with at least two settings, all with a
    Pearson MCC, and per criterion of ``CRITERIA`` that scores a run there, the run it chooses
    (highest value, the first in run order on a tie, as :func:`select`), its MCC, the run of
    best MCC, and the regret (best MCC minus the chosen's). Returns these choices
    (``REGRET_CHOICE_COLUMNS``) and per dataset, method and criterion over seeds and latent
    dimensions (``REGRET_COLUMNS``) the mean MCCs, the mean and largest regret and how often
    the best setting was chosen (``best_chosen``: "n of m"); empty tables without a choice."""
    criteria = [c for c in CRITERIA if c in summary]
    rows = []
    for (dataset, seed, method, n_latent), group in summary.groupby(
        [by, "seed", "method", "n_latent"], sort=False
    ):
        mcc = group["mcc_pearson"]
        if len(group) < 2 or mcc.isna().any():
            continue
        best = mcc.idxmax()
        for criterion in criteria:
            if group[criterion].isna().all():
                continue
            chosen = group[criterion].idxmax()
            rows.append({by: dataset, "seed": seed, "method": method, "n_latent": n_latent,
                         "criterion": criterion, "candidates": len(group), "chosen": group.at[chosen, "run"],
                         "value": group.at[chosen, criterion], "mcc_chosen": mcc[chosen],
                         "best": group.at[best, "run"], "mcc_best": mcc[best],
                         "regret": mcc[best] - mcc[chosen]})
    choices = pd.DataFrame(rows, columns=[by] + REGRET_CHOICE_COLUMNS)
    groups = choices.groupby([by, "method", "criterion"], sort=False)
    table = groups.agg(choices=("regret", "size"), mcc_chosen=("mcc_chosen", "mean"),
                       mcc_best=("mcc_best", "mean"), mean_regret=("regret", "mean"),
                       max_regret=("regret", "max"),
                       best_chosen=("regret", lambda r: f"{(r == 0).sum()} of {len(r)}"))
    return choices, table.reset_index().reindex(columns=[by] + REGRET_COLUMNS)


def summarize_from_files(inputs, outputs, by: str, criterion: str = "udr") -> None:
    """The summarize job of one arm: the runs' ``metrics.json`` files (``inputs``) gathered into
    ``outputs.summary`` with the selection by ``criterion`` (``outputs.selection``),
    ``outputs.table1``, ``outputs.generalisation``, ``outputs.regret`` and ``outputs.regret_choices``."""
    summary, selection = with_selection(load_metrics(inputs, by=by), by=by, criterion=criterion)
    choices, costs = regret(summary, by=by)
    for table, path in ((summary, outputs.summary), (selection, outputs.selection),
                        (table1(summary, by=by, criterion=criterion), outputs.table1),
                        (generalisation(summary, by=by), outputs.generalisation),
                        (costs, outputs.regret), (choices, outputs.regret_choices)):
        io.write_tsv(table, path)
