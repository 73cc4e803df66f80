"""The deviation table of docs/scripts/write_table1.py compares like with like."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "scripts"


@pytest.fixture
def write_table1(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # its sibling module ablations.py
    spec = importlib.util.spec_from_file_location("write_table1", SCRIPTS / "write_table1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "mean_counts", lambda folder: None)  # no datasets here
    return module


def effect(table: pd.DataFrame, choice: str) -> str:
    return table.set_index("choice").loc[choice, "measured effect"]


def runs(ablation, method, run, seeds, mcc, inll):
    return [{"ablation": ablation, "method": method, "run": run, "seed": s, "mcc_pearson": mcc,
             "graph_f1_signed": 0.4, "graph_f1_all": 0.7, "inll": inll} for s in seeds]


def test_the_released_ivae_is_the_svae_at_lambda_0_against_the_baseline_ivae(write_table1):
    """The released iVAE (sVAE at λ = 0) is compared with the baseline's iVAE on the seeds both
    have; the baseline's sVAE at another λ and a seed without a partner are left out."""
    ablations = pd.DataFrame(
        runs("baseline", "ivae", "p15", [0, 1, 2], 0.5, 350.0)
        + runs("baseline", "svae", "p15_lambda10", [0, 1], 0.9, 300.0)
        + runs("released_ivae", "svae", "p15_lambda0", [0, 1], 0.6, 351.0)
        + runs("released_ivae", "svae", "p15_lambda10", [0, 1], 0.1, 999.0)
    )
    text = effect(write_table1.deviations(ablations, None, None), "iVAE prior")
    assert text == "iVAE: MCC 0.500 → 0.600, I-NLL 350.00 → 351.00 (2 seeds)"
    assert "sVAE" not in text


def test_the_particle_row_reads_the_same_models_at_both_counts(write_table1):
    particles = pd.DataFrame([
        {"run": "a", "method": "svae_plus", "particles": 5000, "inll": 349.0, "draw_spread": 0.1, "draws": "x / y"},
        {"run": "a", "method": "svae_plus", "particles": 1000, "inll": 350.5, "draw_spread": 0.3, "draws": "x / y"},
        {"run": "b", "method": "ivae", "particles": 5000, "inll": 340.0, "draw_spread": 0.2, "draws": "x / y"},
        {"run": "b", "method": "ivae", "particles": 1000, "inll": 341.0, "draw_spread": 0.2, "draws": "x / y"},
    ])
    text = effect(write_table1.deviations(None, None, None, particles), "IWELBO particles")
    assert "sVAE+: I-NLL 349.00 → 350.50 (+1.50)" in text and "iVAE: I-NLL 340.00 → 341.00 (+1.00)" in text
    assert "5,000 → 1,000 particles" in text and "2 draws of the particles differ by at most 0.30 nats" in text
    assert effect(write_table1.deviations(None, None, None), "IWELBO particles") == "not measured (no results)"


def test_a_pipe_inside_a_cell_does_not_split_the_markdown_row(write_table1):
    """|r| in a cell is escaped once (already escaped text stays so): every row keeps its columns."""
    table = write_table1.md_table(pd.DataFrame({"F1 \\|r\\| all": ["|r| train 0.5"], "b": ["x"]}))
    rows = table.splitlines()
    assert all(row.replace("\\|", "").count("|") == 3 for row in rows)
    assert "F1 \\|r\\| all" in rows[0] and "\\|r\\| train 0.5" in rows[2]
