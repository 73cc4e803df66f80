"""The paper tables' deviation table (sparseshift.deviations) compares like with like; the
scripts of docs/scripts compute what they say."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "scripts"


def load(name: str):
    """A script of docs/scripts as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tables(monkeypatch):
    """The paper tables' functions (sparseshift.paper_tables, .deviations, .markdown)."""
    from types import SimpleNamespace

    from sparseshift import deviations, markdown, paper_tables

    monkeypatch.setattr(deviations, "mean_counts", lambda folder: None)  # no datasets here
    return SimpleNamespace(deviations=deviations.deviations, beta_curve=deviations.beta_curve,
                           md_table=markdown.md_table, sign_block=paper_tables.sign_block,
                           git=paper_tables.git, provenance=paper_tables.provenance, module=deviations)


@pytest.fixture
def sign_flips():
    return load("sign_flips")


def effect(table: pd.DataFrame, choice: str) -> str:
    return table.set_index("choice").loc[choice, "measured effect"]


def runs(ablation, method, run, seeds, mcc, inll):
    return [{"ablation": ablation, "method": method, "run": run, "seed": s, "mcc_pearson": mcc,
             "r2": 0.8, "graph_f1_signed": 0.4, "graph_f1_all": 0.7, "inll": inll} for s in seeds]


def test_the_released_ivae_is_the_svae_at_lambda_0_against_the_baseline_ivae(tables):
    """The released iVAE (sVAE at λ = 0) is compared with the baseline's iVAE on the seeds both
    have; the baseline's sVAE at another λ and a seed without a partner are left out."""
    ablations = pd.DataFrame(
        runs("baseline", "ivae", "p15", [0, 1, 2], 0.5, 350.0)
        + runs("baseline", "svae", "p15_lambda10", [0, 1], 0.9, 300.0)
        + runs("released_ivae", "svae", "p15_lambda0", [0, 1], 0.6, 351.0)
        + runs("released_ivae", "svae", "p15_lambda10", [0, 1], 0.1, 999.0)
    )
    text = effect(tables.deviations(ablations, None, None), "iVAE prior")
    assert text == "iVAE: MCC 0.500 → 0.600, I-NLL 350.00 → 351.00 (2 seeds)"
    assert "sVAE" not in text


def test_a_beta_vae_ablation_reports_its_r2(tables):
    """β-VAE's ablation rows say how much of the truth its latents keep (R²) beside MCC and I-NLL."""
    changed = runs("text_emission", "beta_vae", "p15_beta8", [0, 1], 0.5, 500.0)
    for row in changed:
        row["r2"] = 0.9
    ablations = pd.DataFrame(runs("baseline", "beta_vae", "p15_beta8", [0, 1, 2], 0.3, 430.0) + changed)
    text = effect(tables.deviations(ablations, None, None), "emission of the simulation")
    assert text.startswith("β-VAE: MCC 0.300 → 0.500, R² 0.80 → 0.90, I-NLL 430.00 → 500.00 (2 seeds)")


def test_the_ablation_table_puts_methods_side_by_side_on_the_seeds_all_of_them_finished(monkeypatch, tmp_path):
    """`ablations.py table`: a row averages over the seeds every method of that row finished, a
    method the ablation did not run is "–", and the informative latents are counted from the
    runs' posterior means."""
    from sparseshift import ablations
    df = pd.DataFrame(
        runs("baseline", "beta_vae", "p15_beta8", [0, 1, 2], 0.3, 430.0)
        + runs("baseline", "vae", "p15", [0, 1], 0.5, 350.0)
        + runs("beta2", "beta_vae", "p15_beta2", [0, 1], 0.4, 400.0)
        + runs("beta2", "beta_vae", "p15_beta8", [0, 1], 0.9, 999.0)  # not beta2's setting: left out
        + runs("unknown_here", "beta_vae", "p15_beta8", [0], 0.9, 999.0)  # collected by another version
    ).assign(elbo_val=-1.0)
    df.loc[(df["ablation"] == "baseline") & (df["method"] == "beta_vae") & (df["seed"] == 2), "mcc_pearson"] = 0.9
    rng = np.random.default_rng(0)
    for seed, active in [(0, 3), (1, 5)]:
        folder = tmp_path / "baseline" / "simulation" / "paper" / f"seed{seed}" / "beta_vae" / "p15_beta8"
        folder.mkdir(parents=True)
        z = np.concatenate([rng.normal(size=(200, active)), 1e-3 * rng.normal(size=(200, 15 - active))], axis=1)
        np.savez(folder / "latents.npz", z_mean=z)
    lines = ablations.table(df, ["baseline", "beta2", "unknown_here"], ["vae", "beta_vae"], tmp_path).splitlines()
    header, *cells = [line.strip("| ").split(" | ") for line in lines[:1] + lines[2:]]
    assert [c[0] for c in cells] == ["baseline", "beta2"]
    base, beta2 = (dict(zip(header, c)) for c in cells)
    assert base["seeds"] == "0, 1"  # the VAE has no seed 2: the β-VAE's 0.9 there is left out
    assert base["MCC vae / beta_vae"] == "0.500 / 0.300"
    assert base["informative latents vae / beta_vae"] == "– / 4.0"
    assert base["I-NLL beta_vae − vae per seed"] == "+80.00 / +80.00"
    assert beta2["MCC vae / beta_vae"] == "– / 0.400"
    assert beta2["I-NLL vae / beta_vae"] == "– / 400.00"
    assert beta2["I-NLL beta_vae − vae per seed"] == "–"


def test_the_beta_curve_compares_each_beta_with_the_vae_on_the_same_seeds(tables, monkeypatch):
    """"β-VAE against β": each β's I-NLL above the VAE's on the seeds both have, and the β closest
    to the paper's R² and to the paper's I-NLL gap, named from the numbers."""
    monkeypatch.setattr(tables.module, "informative", lambda df, root: pd.Series(3.0, index=df.index))
    ablations = pd.DataFrame(
        runs("baseline", "vae", "p15", [0, 1, 2], 0.5, 350.0)
        + runs("baseline", "beta_vae", "p15_beta8", [0, 1], 0.3, 410.0)
        + runs("beta2", "beta_vae", "p15_beta2", [0, 1, 2], 0.55, 352.0)
        + runs("scvi_layers", "beta_vae", "p15_beta8", [0, 1, 2], 0.1, 999.0)  # another ablation: left out
    )
    ablations["beta"] = [1.0] * 3 + [8.0] * 2 + [2.0] * 3 + [8.0] * 3
    ablations.loc[ablations["seed"] == 2, "inll"] += 30.0  # a harder seed: only a same-seed gap stays constant
    ablations.loc[ablations["run"] == "p15_beta8", "r2"] = 0.4
    paper = {"VAE": {"Pearson MCC": "0.46", "R²": "0.82", "I-NLL": "327.10 ± 2.81"},
             "β-VAE": {"Pearson MCC": "0.48", "R²": "0.83", "I-NLL": "392.68 ± 4.58"}}
    lines = "\n".join(tables.beta_curve(ablations, paper)).splitlines()
    table = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")]
    rows = {(r[0], r[1]): dict(zip(table[0], r)) for r in table[1:]}
    assert rows[("β-VAE", "8")]["seeds"] == "0, 1"
    assert rows[("β-VAE", "8")]["I-NLL − VAE"] == "60.00 ± 0.00"
    assert rows[("β-VAE", "2")]["I-NLL − VAE"] == "2.00 ± 0.00"
    assert rows[("*β-VAE (paper)*", "one of {8, 10, 30}")]["I-NLL − VAE"] == "65.58"
    assert lines[-1] == ("Closest to the paper's β-VAE R² (0.83): β = 2 (R² 0.80, I-NLL +2.00 above the VAE). "
                         "Closest to its I-NLL gap over the VAE (+65.58): β = 8 (I-NLL +60.00, R² 0.40). "
                         "No β gives both here: the paper's β-VAE R² and I-NLL gap are not those of one β of this model.")
    assert tables.beta_curve(ablations[ablations["method"] != "vae"], paper) == []


def test_a_row_whose_methods_ran_on_different_seeds_gives_each_its_count(tables):
    """sVAE+ compared on 5 seeds and β-VAE on 3 in one deviation row: each part names its own count."""
    ablations = pd.DataFrame(
        runs("baseline", "svae_plus", "p15_alpha100", range(5), 0.8, 350.0)
        + runs("cells500", "svae_plus", "p15_alpha100", range(5), 0.9, 340.0)
        + runs("baseline", "beta_vae", "p15_beta8", range(3), 0.3, 430.0)
        + runs("cells500", "beta_vae", "p15_beta8", range(3), 0.4, 420.0)
    )
    text = effect(tables.deviations(ablations, None, None), "cells per perturbation")
    assert text.startswith("sVAE+ (5 seeds): MCC 0.800 → 0.900")
    assert "; β-VAE (3 seeds): MCC 0.300 → 0.400" in text and text.endswith("I-NLL 430.00 → 420.00 (α = 100)")
    same = ablations[ablations["seed"] < 3]
    assert effect(tables.deviations(same, None, None), "cells per perturbation").endswith("(3 seeds, α = 100)")


def test_the_particle_row_reads_the_same_models_at_both_counts(tables):
    particles = pd.DataFrame([
        {"run": "a", "method": "svae_plus", "particles": 5000, "inll": 349.0, "draw_spread": 0.1, "draws": "x / y"},
        {"run": "a", "method": "svae_plus", "particles": 1000, "inll": 350.5, "draw_spread": 0.3, "draws": "x / y"},
        {"run": "b", "method": "ivae", "particles": 5000, "inll": 340.0, "draw_spread": 0.2, "draws": "x / y"},
        {"run": "b", "method": "ivae", "particles": 1000, "inll": 341.0, "draw_spread": 0.2, "draws": "x / y"},
    ])
    text = effect(tables.deviations(None, None, None, particles), "IWELBO particles")
    assert "sVAE+: I-NLL 349.00 → 350.50 (+1.50)" in text and "iVAE: I-NLL 340.00 → 341.00 (+1.00)" in text
    assert "5,000 → 1,000 particles" in text and "2 draws of the particles differ by at most 0.30 nats" in text
    assert effect(tables.deviations(None, None, None), "IWELBO particles") == "not measured (no results)"


def test_a_pipe_inside_a_cell_does_not_split_the_markdown_row(tables):
    """|r| in a cell is escaped once (already escaped text stays so): every row keeps its columns."""
    table = tables.md_table(pd.DataFrame({"F1 \\|r\\| all": ["|r| train 0.5"], "b": ["x"]}))
    rows = table.splitlines()
    assert all(row.replace("\\|", "").count("|") == 3 for row in rows)
    assert "F1 \\|r\\| all" in rows[0] and "\\|r\\| train 0.5" in rows[2]


def test_the_closed_form_signed_f1_is_the_evaluations_f1(sign_flips):
    """For random correlations, graphs and sign choices, signed_f1s gives the F1 that
    metrics.graph_metrics gives for the signed matching of the negated latents."""
    from sparseshift import metrics

    rng = np.random.default_rng(0)
    corr = rng.uniform(-1, 1, size=(6, 7))  # one learned latent more than true ones: unmatched
    g_true = rng.random((20, 6)) < 0.2
    graph = rng.random((20, 7)) < 0.3
    patterns = sign_flips.sign_patterns(7, 2**7)
    assert len(patterns) == 128 and (patterns[0] == 1).all() and len({p.tobytes() for p in patterns}) == 128
    f1 = sign_flips.signed_f1s(corr, g_true, graph, patterns)
    for signs, value in zip(patterns[::9], f1[::9]):
        rows, cols = linear_sum_assignment(corr * signs, maximize=True)
        assert value == pytest.approx(metrics.graph_metrics(g_true, graph, rows, cols, learned_binary=graph)["graph_f1"])
    assert f1.std() > 0  # the sign choices do move the signed F1


def test_the_sign_choices_of_a_run_do_not_depend_on_its_own_signs(sign_flips):
    """Latents equal to the true ones up to sign with a perfect graph: the aligned choice scores
    F1 1 and the run's own (flipped) choice less, and every run that differs only in its
    latents' signs gets the same scores over all sign choices."""
    from sparseshift import metrics

    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 6))
    g_true = rng.random((30, 6)) < 0.3
    own = np.array([1, -1, 1, -1, -1, 1])
    flipped = z * own + 0.05 * rng.normal(size=z.shape)
    corr = metrics.correlation_matrix(z, flipped)
    result = sign_flips.score_run(corr, g_true, g_true, 2**6)
    assert result["f1_aligned"] == 1.0 and result["f1_signed"] < 1.0 and result["patterns"] == 64
    unflipped = sign_flips.score_run(metrics.correlation_matrix(z, flipped * own), g_true, g_true, 2**6)
    assert unflipped["f1_signed"] == 1.0
    for key in ("sign_mean", "sign_sd", "share_at_paper", "f1_aligned"):
        assert unflipped[key] == pytest.approx(result[key])


def test_the_sign_block_reads_the_selected_runs_only(tables):
    """Table 1's sign block averages the sign-choice scores of the selected settings, per seed,
    with the sd of the seeds' mean over their independent sign choices."""
    flips = pd.DataFrame([
        {"method": "svae_plus", "setting": "p15_alpha100", "seed": 0, "f1_signed": 0.6, "sign_mean": 0.5,
         "sign_sd": 0.3, "share_at_paper": 0.4, "f1_aligned": 0.9},
        {"method": "svae_plus", "setting": "p15_alpha80", "seed": 1, "f1_signed": 0.4, "sign_mean": 0.3,
         "sign_sd": 0.4, "share_at_paper": 0.2, "f1_aligned": 0.7},
        {"method": "svae_plus", "setting": "p15_alpha100", "seed": 1, "f1_signed": 0.0, "sign_mean": 0.0,
         "sign_sd": 9.0, "share_at_paper": 0.0, "f1_aligned": 0.0},  # not selected
    ])
    selected = pd.DataFrame({"method": ["svae_plus", "svae_plus"], "run": ["p15_alpha100", "p15_alpha80"],
                             "seed": [0, 1]})
    row = tables.sign_block(flips, selected).iloc[0]
    assert row["seeds"] == 2 and row["F1 signed (the runs')"] == "0.500"
    assert row["F1 signed, mean over sign choices"] == "0.400 ± 0.250"  # sqrt(0.3² + 0.4²) / 2
    assert row["share of a run's sign choices ≥ 0.51"] == "0.30"


def test_compare_weights_finds_one_changed_weight_latent_or_history_row(tmp_path, capsys):
    """compare_weights.py: the same run saved twice is identical; one changed weight, latent or
    loss (timings aside) is reported and makes it exit 1."""
    import torch

    compare = load("compare_weights")

    def save(root, weight=0.0, latent=0.0, loss=1.0, seconds=0.1):
        run = root / "simulation" / "s" / "seed0" / "vae" / "p3"
        run.mkdir(parents=True)
        torch.save({"w": torch.tensor([1.0, 2.0 + weight])}, run / "model.pt")
        np.savez(run / "latents.npz", z_mean=np.array([[0.5, latent]]))
        pd.DataFrame({"epoch": [1], "loss": [loss], "train_seconds": [seconds]}).to_csv(run / "history.tsv", sep="\t", index=False)

    save(tmp_path / "before")
    save(tmp_path / "same", seconds=9.0)  # only a timing differs
    assert compare.main([str(tmp_path / "before"), str(tmp_path / "same")]) == 0
    for name, change in {"weights": {"weight": 1e-6}, "latents": {"latent": 1e-9}, "history": {"loss": 1.5}}.items():
        save(tmp_path / name, **change)
        assert compare.main([str(tmp_path / "before"), str(tmp_path / name)]) == 1
        assert f"DIFFERS: {name}" in capsys.readouterr().out


def test_verify_runs_samples_the_first_stacked_job_of_every_method(monkeypatch):
    """The paper configuration's sample: every method's first training stack, whole (a stack's
    numbers depend on its members), of which the runs (not the replicates) are compared."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    verify = load("verify_runs")
    plan = verify.Plan(verify.load_config([SCRIPTS.parents[1] / "config" / "paper.yaml"], Path("/tmp/v")))
    members = verify.sample(plan, 1)
    first = {}
    for job, stack in plan.stacks(transfer=False).items():
        first.setdefault(stack[0].method, stack)
    assert sorted({m.method for m in members}) == sorted(plan.config["methods"])
    assert members == [m for stack in first.values() for m in stack]
    assert len(verify.sample(plan, 2)) > len(members)


def test_verify_runs_compares_a_run_without_its_folder_with_its_summary_row(monkeypatch, tmp_path):
    """A run whose folder was not kept is compared with its row of the recorded summary.tsv:
    a metric metrics.json leaves empty matches the empty cell, a changed metric is named."""
    import json
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(SCRIPTS))
    verify = load("verify_runs")
    member = SimpleNamespace(arm="simulation", dataset="paper", method="svae_plus", seed=3, hp="p15_alpha100")
    metrics = {"mcc_pearson": 0.1234567890123, "lambda": None, "epochs_run": 300, "train_seconds": 5.0}
    row = {"simulation": "paper", "method": "svae_plus", "seed": 3, "run": "p15_alpha100", **metrics,
           "train_seconds": 9.0}
    other = {**row, "seed": 4, "mcc_pearson": 0.5}
    (tmp_path / "simulation").mkdir()
    pd.DataFrame([row, other]).to_csv(tmp_path / "simulation" / "summary.tsv", sep="\t", index=False)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    assert verify.summary_differences(tmp_path, member, path) == []
    path.write_text(json.dumps({**metrics, "mcc_pearson": 0.1234567890124}))
    assert verify.summary_differences(tmp_path, member, path) == ["metric mcc_pearson"]
    assert verify.summary_differences(tmp_path, SimpleNamespace(**{**vars(member), "seed": 7}), path) == [
        f"0 rows for this run in {tmp_path / 'simulation' / 'summary.tsv'}"]


def test_the_paper_tables_cite_a_verification_at_head_only(tables, tmp_path):
    """A table whose runs' workflow/ differs from HEAD's is valid with verify_runs.py's report
    made at HEAD with every run identical; a stale or failed report is refused."""
    old = tables.git("rev-list", "--max-parents=0", "HEAD").splitlines()[0]  # the first commit
    summary = pd.DataFrame({"code_version": [old]})
    head = tables.git("rev-parse", "HEAD")
    report = tmp_path / "verification.json"
    for content, verified in [({"head": head, "runs": 6, "identical": 6, "methods": ["vae"]}, True),
                              ({"head": head, "runs": 6, "identical": 5, "methods": ["vae"]}, False),
                              ({"head": old, "runs": 6, "identical": 6, "methods": ["vae"]}, False)]:
        report.write_text(json.dumps(content))
        _, same = tables.provenance(summary, report)
        assert ("verified at HEAD: 6 of 6 runs" in same) == verified
        assert ("no verification at HEAD" in same) != verified


def test_the_generalisation_section_gives_each_paired_metric_its_verdict(tmp_path, monkeypatch):
    """From a generalisation table written by the workflow's own function: sVAE+ better on every
    seed wins, worse on every seed loses, else ties; the block replaces the old one in place."""
    from sparseshift.summary import generalisation

    rows = []
    for seed in range(5):
        for method, inll, f1 in (("svae_plus", 300.0, 0.8), ("ivae", 301.0 + seed, 0.5), ("svae", 300.0 + (-1) ** seed, 0.9)):
            rows.append({"simulation": "paper_combinations", "method": method, "seed": seed, "selected": True,
                         "inll": inll, "graph_f1_heldout_learned": f1, "code_version": "abc123", "n_particles": 500})
    folder = tmp_path / "simulation"
    folder.mkdir()
    summary = pd.DataFrame(rows)
    summary.to_csv(folder / "summary.tsv", sep="\t", index=False)
    generalisation(summary).to_csv(folder / "generalisation.tsv", sep="\t", index=False)
    module = load("write_generalisation")
    block = module.section(tmp_path)
    assert "against iVAE, sVAE+ **wins** on `inll` (-3.000, better on 5 of 5)" in block
    assert "against sVAE, sVAE+ **ties** on `inll`" in block  # better on 2 seeds of 5 (300 < 301)
    assert "against sVAE, sVAE+ **loses** on `graph_f1_heldout_learned`" in block
    doc = tmp_path / "table1.md"
    doc.write_text(f"# Table 1\n\n{module.BEGIN}\nold\n{module.END}\n\ntail\n")
    monkeypatch.setattr("sys.argv", ["write_generalisation.py", str(tmp_path), "--into", str(doc)])
    module.main()
    text = doc.read_text()
    assert "old" not in text and text.count(module.BEGIN) == 1 and text.endswith("tail\n") and "`abc123`" in text
    assert "5 seeds, one setting per method, methods iVAE, sVAE, sVAE+, 500 particles" in text
