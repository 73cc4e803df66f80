"""The paper tables (sparseshift.paper_tables, workflow/rules/paper.smk): computed from the
results they read, written by the workflow, and copied to docs/table1.md with the blocks that
other commands own; the ablations' committed configurations are their definitions."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from paper_inputs import make_inputs

from sparseshift import ablations, deviations, paper_tables
from sparseshift.markdown import mean_sd
from sparseshift.methods import DISPLAY_NAMES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BLOCKS = "<!-- generalisation -->\nG\n<!-- /generalisation -->\n\nbetween\n\n<!-- ablation-x -->\nX\n<!-- /ablation-x -->"
PAPER_VALUES = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["paper_table1"]


def rows(text: str, heading: str) -> list[dict[str, str]]:
    """The markdown table that follows ``heading`` in ``text``, one dict per row."""
    after = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("| "))
    lines = itertools.takewhile(lambda line: line.startswith("|"), after[start:])
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


@pytest.fixture
def inputs(tmp_path):
    return make_inputs(tmp_path)


def write(inputs, blocks=()) -> str:
    text, _ = paper_tables.document(inputs["paper"], PAPER_VALUES, inputs["default"], inputs["ablations"],
                                    inputs["particles"], verification=inputs["verification"],
                                    root=inputs["ablation_dir"], blocks=tuple(blocks))
    return text


def test_table1_rows_are_the_means_of_the_selected_runs(inputs):
    text = write(inputs)
    summary = pd.read_csv(inputs["paper"] / "simulation" / "summary.tsv", sep="\t")
    selected = summary[summary["selected"]]
    table = [r for r in rows(text, "## Selected models (UDR)") if not r["model"].startswith("*")]
    assert [r["model"] for r in table] == list(DISPLAY_NAMES.values())
    for row, (method, group) in zip(table, sorted(selected.groupby("method"), key=lambda g: list(DISPLAY_NAMES).index(g[0]))):
        assert row["Pearson MCC"] == mean_sd(group["mcc_pearson"], 3)
        assert row["I-NLL"] == mean_sd(group["inll"], 2)
        assert row["seeds"] == str(group["seed"].nunique())
    paper_rows = {r["model"]: r for r in rows(text, "## Selected models (UDR)") if r["model"].startswith("*")}
    assert paper_rows["*sVAE+ (paper)*"]["Pearson MCC"] == PAPER_VALUES["sVAE+"]["Pearson MCC"]
    settings = rows(text, "## Every setting")
    assert len(settings) == summary.groupby(["method", "run"]).ngroups


def test_a_deviation_row_shows_the_baseline_and_the_changed_means_on_shared_seeds(inputs):
    text = write(inputs)
    table = pd.read_csv(inputs["ablations"], sep="\t")
    keep = table[(table["method"] == "svae_plus") & (table["run"] == "p15_alpha100")]
    base, changed = keep[keep["ablation"] == "baseline"], keep[keep["ablation"] == "cells500"]
    seeds = sorted(set(base["seed"]) & set(changed["seed"]))
    assert len(seeds) < base["seed"].nunique()  # the baseline's extra seed is left out
    old = base[base["seed"].isin(seeds)]["mcc_pearson"].mean()
    new = changed[changed["seed"].isin(seeds)]["mcc_pearson"].mean()
    row = next(r for r in rows(text, "## Deviations") if r["choice"] == "cells per perturbation")
    assert row["measured effect"].startswith(f"sVAE+: MCC {old:.3f} → {new:.3f}, F1 signed")
    assert f"({len(seeds)} seeds, α = 100)" in row["measured effect"]
    emission = next(r for r in rows(text, "## Deviations") if r["choice"] == "emission of the simulation")
    assert "mean counts per cell" in emission["measured effect"]  # its datasets count 10 times more


def test_the_beta_curve_and_the_sign_block_read_their_inputs(inputs):
    text = write(inputs)
    curve = {(r["model"], r["β"]): r for r in rows(text, "### β-VAE against β")}
    assert curve[("VAE", "1")]["seeds"] == "0, 1, 2" and curve[("β-VAE", "2")]["seeds"] == "0, 1"
    table = pd.read_csv(inputs["ablations"], sep="\t")
    beta2 = table[table["ablation"] == "beta2"]
    assert curve[("β-VAE", "2")]["Pearson MCC"] == mean_sd(beta2["mcc_pearson"], 3)
    flips = pd.read_csv(inputs["sign_flips"], sep="\t")
    signs = {r["model"]: r for r in rows(text, "### The signed F1 and the latents' signs")}
    assert signs["sVAE+"]["F1 signed (the runs')"] == f"{flips[flips['method'] == 'svae_plus']['f1_signed'].mean():.3f}"


def test_the_named_blocks_of_the_replaced_file_are_kept_at_its_end(inputs):
    from sparseshift.markdown import kept

    text = write(inputs, kept(f"old text\n\n{BLOCKS}\n"))
    assert text.startswith("# Table 1, regenerated\n")
    assert text.endswith("\n<!-- generalisation -->\nG\n<!-- /generalisation -->\n\n\n<!-- ablation-x -->\nX\n<!-- /ablation-x -->\n")
    assert "between" not in text and "old text" not in text


def test_the_workflow_writes_the_paper_tables_and_copies_them_keeping_the_blocks(tmp_path):
    """`snakemake docs_table1`: the ablations collected from their runs' metrics.json, the paper
    tables written with a log and a benchmark, and docs/table1.md their copy with its blocks."""
    work = tmp_path / "work"
    paths = make_inputs(work / "results")
    (work / "results" / "verify").mkdir()
    paths["verification"].rename(work / "results" / "verify" / "verification.json")
    expected = pd.read_csv(paths["ablations"], sep="\t")
    paths["ablations"].unlink()
    (work / "config").mkdir()
    shutil.copy(ROOT / "config" / "paper.yaml", work / "config")
    (work / "docs").mkdir()
    (work / "docs" / "table1.md").write_text(f"old\n\n{BLOCKS}\n")
    res = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "workflow" / "Snakefile"), "--cores", "1",
                          "--directory", str(work), "--configfile", str(ROOT / "tests" / "configs" / "tiny.yaml"),
                          "--", "docs_table1"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    collected = pd.read_csv(work / "results" / "ablations" / "ablations.tsv", sep="\t")
    keys = ["ablation", "method", "run", "seed"]
    pd.testing.assert_frame_equal(collected.sort_values(keys).reset_index(drop=True),
                                  expected[collected.columns].sort_values(keys).reset_index(drop=True))
    out = work / "results" / "paper_tables"
    assert (out / "logs" / "paper_tables.log").exists() and (out / "logs" / "paper_tables.benchmark.tsv").exists()
    markdown = (out / "table1.md").read_text()
    assert "Written by `snakemake --cores all paper_tables` on" in markdown and "<!--" not in markdown
    assert "are identical to it" in markdown  # the runs' commit is HEAD (verification: test_docs_scripts)
    doc = (work / "docs" / "table1.md").read_text()
    assert doc.startswith(markdown) and doc.endswith("<!-- /ablation-x -->\n") and "\nG\n" in doc
    deviation_rows = pd.read_csv(out / "deviations.tsv", sep="\t")
    assert list(deviation_rows["choice"]) == [choice for choice, *_ in deviations.DEVIATIONS]
    table1 = pd.read_csv(out / "table1.tsv", sep="\t", dtype=str)
    assert list(table1["model"][~table1["model"].str.startswith("*")]) == list(DISPLAY_NAMES.values())


def test_the_committed_ablation_configs_are_their_definitions():
    committed = sorted(p.stem for p in ablations.CONFIGS.glob("*.yaml"))
    assert committed == sorted(ablations.ABLATIONS)
    for name in ablations.ABLATIONS:
        text = (ablations.CONFIGS / f"{name}.yaml").read_text()
        assert text == ablations.config_text(name), f"config/ablations/{name}.yaml: rewrite it with ablations.py configs"
        cfg = yaml.safe_load(text)
        assert cfg["results"] == f"results/ablations/{name}" and cfg["stack_models"] == 1
        sim = cfg["simulations"][0]
        assert sim["name"] == "paper"
        assert sim["cells_per_perturbation"] == (500 if name == "cells500" else 250)


def test_an_ablation_is_a_plain_run_of_its_configuration_over_the_papers(tmp_path):
    """The released optimiser's configuration on top of config/paper.yaml plans the one fixed
    setting of sVAE+ on three seeds with its own optimiser, the paper's other choices kept."""
    res = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "workflow" / "Snakefile"), "-n", "--cores", "1",
                          "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "paper.yaml"),
                          str(ablations.CONFIGS / "released_optimiser.yaml"), "--printshellcmds", "--",
                          "results/ablations/released_optimiser/simulation/summary.tsv"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = set(re.findall(r"results/ablations/released_optimiser/simulation/paper/seed(\d)/(\w+)/(\w+)/metrics.json",
                          res.stdout + res.stderr))
    assert runs == {(str(s), "svae_plus", "p15_alpha100") for s in range(3)}
