"""Selection among a method's settings and the Table 1 block of the selected runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sparseshift import summary as summary_mod


def _runs() -> pd.DataFrame:
    """Two seeds; sVAE+ at three alphas (UDR and MCC per seed), VAE with one setting."""
    rows = []
    udr = {0: {10: 0.4, 40: 0.7, 100: 0.6}, 1: {10: 0.3, 40: 0.5, 100: 0.8}}
    for seed in (0, 1):
        rows.append({"simulation": "sim", "method": "vae", "seed": seed, "run": "p15", "n_latent": 15,
                     "mcc_pearson": 0.5, "udr": np.nan})
        for alpha in (10, 40, 100):
            rows.append({"simulation": "sim", "method": "svae_plus", "seed": seed,
                         "run": f"p15_alpha{alpha}", "n_latent": 15, "alpha": alpha,
                         "mcc_pearson": alpha / 100, "udr": udr[seed][alpha]})
    df = pd.DataFrame(rows)
    for col in summary_mod.ID_COLUMNS + summary_mod.METRIC_COLUMNS + summary_mod.EXTRA_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df


def test_selection_picks_highest_udr_per_seed() -> None:
    summary, selection = summary_mod.with_selection(_runs())
    chosen = selection[selection["selected"]]
    assert set(zip(chosen["method"], chosen["seed"], chosen["run"])) == {
        ("vae", 0, "p15"), ("vae", 1, "p15"),
        ("svae_plus", 0, "p15_alpha40"), ("svae_plus", 1, "p15_alpha100"),
    }
    assert list(selection.columns) == ["simulation"] + summary_mod.SELECTION_COLUMNS
    assert (selection.loc[selection["method"] == "svae_plus", "candidates"] == 3).all()
    assert summary["selected"].sum() == 4 and summary["selected"].dtype == bool


def test_table1_has_fixed_rows_and_a_selected_block() -> None:
    summary, _ = summary_mod.with_selection(_runs())
    table = summary_mod.table1(summary)
    fixed = table[table["selection"] == "fixed"]
    selected = table[table["selection"] == "UDR"].set_index("method")
    assert len(fixed) == 4 and len(selected) == 2
    # the selected sVAE+ block averages alpha40 (seed 0, MCC 0.4) and alpha100 (seed 1, MCC 1.0)
    assert selected.loc["svae_plus", "Pearson MCC"] == "0.70 ± 0.42"
    assert selected.loc["svae_plus", "run"] == "p15 selected"
    assert selected.loc["svae_plus", "chosen"] == "alpha40 ×1, alpha100 ×1"
    assert selected.loc["vae", "Pearson MCC"] == "0.50 ± 0.00"
    assert selected.loc["vae", "chosen"] == "one setting"
    assert list(table.columns[:6]) == ["simulation", "method", "model", "run", "selection", "chosen"]


def test_selection_maximises_the_configured_criterion() -> None:
    """selection.criterion elbo_val: the run of highest validation ELBO per seed, whatever UDR
    says; table1 names the criterion in its selected block."""
    runs = _runs()
    elbo = {(0, 10): -300.0, (0, 40): -310.0, (0, 100): -305.0, (1, 10): -290.0, (1, 40): -299.0, (1, 100): -291.0}
    runs["elbo_val"] = [elbo.get((s, a), np.nan) for s, a in zip(runs["seed"], runs["alpha"])]
    summary, selection = summary_mod.with_selection(runs, criterion="elbo_val")
    chosen = selection[selection["selected"] & (selection["method"] == "svae_plus")]
    assert list(chosen["run"]) == ["p15_alpha10", "p15_alpha10"]  # UDR would take alpha40, alpha100
    assert (chosen["score"] == [-300.0, -290.0]).all() and set(selection["criterion"]) == {"elbo_val"}
    table = summary_mod.table1(summary, criterion="elbo_val")
    assert set(table["selection"]) == {"fixed", "ELBO (val)"}
    udr_table = summary_mod.table1(summary_mod.with_selection(runs)[0])
    assert set(udr_table["selection"]) == {"fixed", "UDR"}


def test_selection_without_scores_is_an_error() -> None:
    runs = _runs()
    runs["udr"] = np.nan
    with pytest.raises(ValueError, match="replicates missing"):
        summary_mod.select(runs)


def test_generalisation_pairs_svae_plus_with_ivae_and_svae_seed_by_seed():
    from sparseshift.summary import generalisation

    rows = []
    for seed, (plus, ivae, svae) in enumerate([(300.0, 302.0, 299.0), (310.0, 311.5, 312.0), (305.0, 304.0, 306.0)]):
        for method, inll, f1 in (("svae_plus", plus, 0.8), ("ivae", ivae, 0.5), ("svae", svae, 0.9), ("vae", 330.0, None)):
            rows.append({"simulation": "s", "method": method, "seed": seed, "selected": True, "inll": inll,
                         "inll_few_shot_k5": inll + 10, "graph_f1_zero_shot": f1,
                         "graph_f1_heldout_learned": None if f1 is None else 1 - f1})
    rows.append({"simulation": "s", "method": "svae_plus", "seed": 0, "selected": False, "inll": 1.0})  # not chosen
    table = generalisation(pd.DataFrame(rows))
    inll = table[table["metric"] == "inll"].set_index("method")
    assert inll.loc["svae_plus", "per_seed"] == "300.00 / 310.00 / 305.00"  # the selected runs only
    assert inll.loc["svae_plus - ivae", "per_seed"] == "-2.00 / -1.50 / +1.00"
    assert inll.loc["svae_plus - ivae", "better_seeds"] == "2 of 3"  # lower I-NLL is better
    assert inll.loc["svae_plus - svae", "better_seeds"] == "2 of 3"
    f1 = table[table["metric"] == "graph_f1_zero_shot"].set_index("method")
    assert f1.loc["svae_plus - svae", "better_seeds"] == "0 of 3"  # higher F1 is better
    assert "vae" not in set(f1.index)  # no target graph, no row
    held = table[table["metric"] == "graph_f1_heldout_learned"].set_index("method")
    assert held.loc["svae_plus - svae", "better_seeds"] == "3 of 3"  # 0.2 against 0.1
    assert list(dict.fromkeys(table["metric"])) == ["inll_few_shot_k5", "inll", "graph_f1_zero_shot",
                                                    "graph_f1_heldout_learned"]
