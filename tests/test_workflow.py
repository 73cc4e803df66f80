"""The Snakefile itself: lint, formatting, config validation and an end-to-end run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sparseshift.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
TINY = REPO / "tests" / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent


def snakemake(*args, cwd=REPO, check=True):
    cmd = [str(BIN / "snakemake"), "-s", str(SNAKEFILE), *args]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def test_lint_is_clean():
    res = snakemake("--lint")
    assert "Congratulations" in res.stdout + res.stderr


def test_snakefmt_is_clean():
    res = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "workflow/"], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def planned_jobs(workdir, *args, targets=()) -> dict[str, int]:
    """Job counts per rule of a dry run in an empty working directory.

    The default config file is passed explicitly because ``configfile:`` is read
    relative to the working directory; a further ``--configfile`` is layered on top,
    as it is when a user runs from the repository.
    """
    out = snakemake(
        *targets, "-n", "--cores", "2", "--quiet", "rules", "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), *args,
    ).stdout
    rows = (line.split() for line in out.splitlines())
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}


PAPER = str(REPO / "config" / "paper.yaml")
# the default's settings with sVAE at 2 lambdas: its selection trains replicates
TWO_LAMBDAS = "hyperparameters={'beta': [8], 'lambda': [1, 10], 'alpha': [40]}"


def one_model_jobs(jobs: dict) -> dict:
    """Numbers of one-model training jobs of runs and of replicates, and of transfer jobs
    (their rule names are generated: train_<run>[_replicate<r>], transfer_<run>)."""
    one = {rule: n for rule, n in jobs.items() if rule.startswith(("train_", "transfer_")) and "_stack_" not in rule}
    return {"train": sum(1 for r in one if r.startswith("train_") and "_replicate" not in r),
            "train_replicate": sum(1 for r in one if r.startswith("train_") and "_replicate" in r),
            "transfer": sum(1 for r in one if r.startswith("transfer_"))}


def stacked_jobs(jobs: dict) -> dict:
    """Numbers of stacked training and transfer jobs per arm (their rule names are generated)."""
    return {
        f"{step}_{arm}": sum(1 for rule in jobs if rule.startswith(f"{step}_stack_{arm}_"))
        for step in ("train", "transfer") for arm in ("simulation", "replogle")
    }


@pytest.mark.parametrize(
    "args, targets, n_sim, n_datasets, n_replogle, n_transferred, n_jobs",
    [
        # default: 5 runs (one setting per method) x 2 seeds on one simulation setting, no
        # replicates; stack_methods, stacks of up to 8: the 10 models of every method in 2
        # training jobs of 5, and one transfer job per method
        ((), (), 5 * 2, 2, 0, 10,
         {"train_simulation": 2, "transfer_simulation": 5, "train_replogle": 0, "transfer_replogle": 0}),
        (("--config", "stack_methods=false", "stack_models=16"), (), 5 * 2, 2, 0, 10,  # one method per stack
         {"train_simulation": 5, "transfer_simulation": 5, "train_replogle": 0, "transfer_replogle": 0}),
        # one model per job: one job per run and one per replicate (sVAE at 2 lambdas: 6 runs
        # per seed and 1 more model for each competing sVAE setting)
        (("--config", "stack_models=1", TWO_LAMBDAS), (), 6 * 2, 2, 0, 12,
         {"train": 12, "train_replicate": 2 * 2 * 1, "transfer": 12}),
        # paper (stack_models: 16): per seed, 17 runs (on the p = 15 setting VAE, iVAE, beta-VAE
        # at 3 betas, sVAE at 3 lambdas, sVAE+ at 6 alphas; sVAE+ at p = 5, 10, 20) on 4
        # settings, and 2 replicates of each of the 12 competing settings. Stacks of at most 16
        # per method and setting: sVAE+ 90 models in 6 jobs, sVAE and beta-VAE 45 in 3, VAE,
        # iVAE and each p 5 in 1; the p = 15 runs' transfers: sVAE+ 30 in 2 jobs, 15 or 5 in 1
        # for the others; plus 5 methods on 9 Replogle folds (seed 0, one setting each)
        ((PAPER,), ("simulation", "replogle"), 17 * 5, 4 * 5, 5 * 9, 14 * 5 + 45,
         {"train_simulation": 17, "transfer_simulation": 6, "train_replogle": 45, "transfer_replogle": 45}),
        ((PAPER, "--config", "seeds=[0]"), ("simulation", "replogle"), 17, 4, 5 * 9, 14 + 45,  # sVAE+: 18 models in 2 jobs
         {"train_simulation": 9, "transfer_simulation": 5, "train_replogle": 45, "transfer_replogle": 45}),
        ((PAPER,), ("simulation",), 17 * 5, 4 * 5, 0, 14 * 5,  # one arm only
         {"train_simulation": 17, "transfer_simulation": 6, "train_replogle": 0, "transfer_replogle": 0}),
        # the default target leaves out the Replogle arm while its 66 GB input is not here: a
        # download that large is asked for (target replogle), never started by `snakemake`
        ((PAPER,), (), 17 * 5, 4 * 5, 0, 14 * 5,
         {"train_simulation": 17, "transfer_simulation": 6, "train_replogle": 0, "transfer_replogle": 0}),
    ],
)
def test_dry_run_plans_every_run(tmp_path, args, targets, n_sim, n_datasets, n_replogle, n_transferred, n_jobs):
    jobs = planned_jobs(tmp_path, *args, targets=targets)
    n_runs = n_sim + n_replogle
    assert jobs["evaluate"] == jobs["enrichment"] == n_runs
    if "train" in n_jobs:  # one model per job: one rule per job, one job per rule
        assert one_model_jobs(jobs) == n_jobs and not any(stacked_jobs(jobs).values())
        assert one_model_jobs(jobs)["transfer"] == n_transferred
        assert all(n == 1 for rule, n in jobs.items() if rule.startswith(("train_", "transfer_")))
    else:  # stacked; the paper's p sweep (transfer: false) has no transfer
        assert stacked_jobs(jobs) == n_jobs and not any(one_model_jobs(jobs).values())
    assert jobs["simulate"] == n_datasets
    paper = PAPER in args
    sweeps = 2 if paper else 0  # the paper config sweeps p (Table 4) and alpha (Figure 4)
    n_settings = 4 if paper else 1
    assert jobs["run_figures"] == 3 * n_settings  # target graphs, shifts, curves of the first seed
    if n_replogle:  # the 66 GB file and Table S3 are downloaded, then preprocessed once
        assert jobs["download"] == 2 and jobs["preprocess_replogle"] == 1 and jobs["replogle_fold"] == 9
        assert jobs["summarize"] == 2 and jobs["plot"] == 3 + sweeps + 2  # + Replogle I-NLL, Table 1
    else:
        assert "download" not in jobs and "preprocess_replogle" not in jobs
        assert jobs["summarize"] == 1 and jobs["plot"] == 3 + sweeps  # methods, I-NLL, Table 1


@pytest.mark.parametrize(
    "override, key",
    [
        ("methods=[vae,foo]", "methods.1"),
        ("train={'epochs': -1}", "train.epochs"),
        ("simulations=[{'name': 's', 'n_heldout': 200}]", "simulations.0.n_heldout"),
        ("simulations=[{'name': 's', 'targets_per_perturbation': [3, 1]}]", "targets_per_perturbation"),
        ("simulations=[{'n_latent': 3}]", "'name' is a required property"),
        ("hyperparameters={'alpha': [-2]}", "hyperparameters.alpha.0"),
        ("transfer={'particles': 0}", "transfer.particles"),
        ("simulations=[{'name': 's', 'heldout': {'targets_per_perturbation': [9, 9]}}]",
         "simulations.0.heldout.targets_per_perturbation"),
        ("resources={'transfer': {'thread': 2}}", "resources.transfer"),
        ("replogle={'dataset': 'k562'}", "replogle.dataset"),
        ("replogle={'folds': [{'name': 'a b'}]}", "replogle.folds.0.name"),
        ("verbose=yes", "verbose"),
    ],
)
def test_config_errors_name_the_key_before_any_job(tmp_path, override, key):
    res = snakemake("-n", "--cores", "1", "--directory", str(tmp_path), "--configfile",
                    str(TINY), "--config", override, check=False)
    assert res.returncode != 0
    assert key in res.stderr + res.stdout
    assert not (tmp_path / "results").exists()


def test_missing_required_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seeds: [0]\nmethods: [vae]\n")
    res = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(cfg), check=False)
    assert res.returncode != 0
    assert "'simulations' is a required property" in res.stdout + res.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    res = snakemake("--cores", "2", "--directory", str(work), "--configfile", str(TINY))
    (work / "console.txt").write_text(res.stdout + res.stderr)
    return work / "results"


def test_the_console_shows_jobs_and_the_logs_every_epoch(tiny_run):
    """Per training job a start and a finish line on the console; the epochs in its log only.
    The tiny run stacks (the default): one training job per method, sVAE+ holding its 2
    settings x 3 replicates."""
    console = (tiny_run.parent / "console.txt").read_text()
    assert not re.search(r"epoch \d+/\d+", console)
    train_logs = sorted((tiny_run / "logs" / "train" / "stacked").glob("*.log"))
    assert [log.stem for log in train_logs] == [f"simulation_tiny_{m}_p4" for m in sorted(METHODS)]
    for log in train_logs:
        n = 6 if "svae_plus" in log.name else 1
        assert len(re.findall(rf"epoch \d+/4 of {n} stacked models", log.read_text())) == 4, log
    first = "results/simulation/tiny/seed0/svae_plus/p4_alpha10"
    assert f"train {first} and 5 more (stacked): start, 4 epochs" in console
    assert re.search(rf"train {first} and 5 more \(stacked\): done, 4 epochs in [0-9.]+ s, validation ELBO( -[0-9.]+){{6}}",
                     console)
    assert len(re.findall(r"\(stacked\): done, 4 epochs", console)) == 5
    for log in (tiny_run / "logs").rglob("*.log"):
        assert "mask_density nan" not in log.read_text(), log
    assert re.search(r"transfer results/simulation/tiny/seed0/vae/p4 \(stacked\): done, [0-9]+ \+ 0 epochs, I-NLL [0-9.]+",
                     console)


@pytest.mark.parametrize("stack_models", [1, 16])
def test_a_diverging_run_fails_its_training_job_once_writing_no_model(tmp_path, stack_models):
    lr = tmp_path / "lr.yaml"
    lr.write_text(f"train:\n  lr: 1.0e+5\nstack_models: {stack_models}\n")
    target = "results/simulation/tiny/seed0/vae/p4/model.pt"
    res = snakemake(target, "--cores", "1", "--directory", str(tmp_path), "--configfile", str(TINY), str(lr),
                    check=False)
    console = res.stdout + res.stderr
    stacked = " (model 0 of its stack)" if stack_models > 1 else ""
    message = (f"training of run results/simulation/tiny/seed0/vae/p4{stacked} diverged: the training loss became "
               "non-finite in epoch 1 (learning rate 100000); try a lower learning rate (config key train.lr, "
               "replogle.train.lr on the Replogle arm)")
    rule = "train_stack_simulation_tiny_vae_p4" if stack_models > 1 else "train_simulation_tiny_seed0_vae_p4"
    assert res.returncode != 0 and f"Error in rule {rule}:" in console
    assert console.count(message) == 1 and "Trying to restart" not in console  # not retried
    logs = tmp_path / "results" / "logs" / "train"
    log = (logs / "stacked" / "simulation_tiny_vae_p4.log" if stack_models > 1
           else logs / "simulation" / "tiny" / "seed0" / "vae" / "p4.log").read_text()
    assert message in log.splitlines()[-1] and "Traceback" in log  # the log ends with the error
    assert not list((tmp_path / "results").rglob("*.pt"))  # no model, no checkpoint


def test_summary_has_one_row_per_run_with_metrics(tiny_run):
    summary = pd.read_csv(tiny_run / "simulation" / "summary.tsv", sep="\t")
    expected = ["simulation", "method", "seed", "mcc_pearson", "mcc_spearman", "r2", "graph_precision",
                "graph_recall", "graph_f1", "graph_auprc", "elbo_val", "n_latent", "alpha", "beta",
                "inll", "elbo_heldout_before", "elbo_heldout", "iwelbo_heldout", "n_particles"]
    assert set(expected) <= set(summary.columns)
    assert list(summary["method"]) == ["vae", "beta_vae", "ivae", "svae", "svae_plus", "svae_plus"]
    assert list(summary["run"])[-2:] == ["p4_alpha10", "p4_alpha30"]
    assert (summary["simulation"] == "tiny").all() and (summary["seed"] == 0).all()
    assert (summary["n_latent"] == 4).all()
    assert summary["beta"].tolist() == [1.0, 8.0, 1.0, 1.0, 1.0, 1.0]
    assert summary["alpha"].notna().tolist() == [False, False, False, False, True, True]
    # the two sVAE+ settings compete: each is scored by UDR over its 3 models, one is selected
    competing = summary["method"] == "svae_plus"
    assert summary.loc[competing, "udr"].between(0, 1).all() and (summary.loc[competing, "udr_models"] == 3).all()
    assert summary.loc[~competing, "udr"].isna().all()
    assert summary.groupby("method")["selected"].sum().eq(1).all()
    selection = pd.read_csv(tiny_run / "simulation" / "selection.tsv", sep="\t")
    chosen = selection[selection["method"] == "svae_plus"]
    assert chosen["candidates"].eq(2).all() and chosen["selected"].sum() == 1
    assert chosen.loc[chosen["selected"], "udr"].item() == chosen["udr"].max()
    for col in ("graph_f1_all", "graph_f1_signed"):
        assert summary.loc[~summary["method"].isin(["vae", "beta_vae"]), col].between(0, 1).all(), col
    # every step records the code it ran (a commit, +modified for local changes)
    assert summary["code_version"].eq(summary["train_code_version"]).all()
    for col in ["mcc_pearson", "mcc_spearman"]:
        assert summary[col].between(0, 1).all()
    graph = ["graph_precision", "graph_recall", "graph_f1", "graph_auprc"]
    no_graph = summary["method"].isin(["vae", "beta_vae"])
    assert summary.loc[no_graph, graph].isna().all().all()
    assert summary.loc[~no_graph, graph].apply(lambda c: c.between(0, 1)).all().all()
    assert (summary["elbo_val"] < 0).all()
    assert (summary["inll"] > 0).all() and (summary["inll"] == -summary["iwelbo_heldout"]).all()
    assert (summary["n_particles"] == 50).all()


def test_the_choices_criteria_and_their_regret_are_written(tiny_run):
    """The two sVAE+ settings (3 models each) carry UDR over 2 and 3 models and the agreement of
    their target graphs; regret.tsv compares each criterion's choice with the best setting."""
    summary = pd.read_csv(tiny_run / "simulation" / "summary.tsv", sep="\t")
    competing = summary["method"] == "svae_plus"
    for col in ("udr_r2", "udr_r3", "mask_agreement"):
        assert summary.loc[competing, col].between(0, 1).all(), col
        assert summary.loc[~competing, col].isna().all(), col
    assert (summary.loc[competing, "udr_r3"] == summary.loc[competing, "udr"]).all()
    assert "udr_r5" not in summary  # 3 models per setting
    table = pd.read_csv(tiny_run / "simulation" / "regret.tsv", sep="\t")
    assert list(table["criterion"]) == ["udr_r2", "udr_r3", "udr", "elbo_val", "mask_agreement"]
    assert (table["method"] == "svae_plus").all() and (table["choices"] == 1).all()
    assert table["best_chosen"].isin(["0 of 1", "1 of 1"]).all()
    best = summary.loc[competing, "mcc_pearson"].max()
    assert np.allclose(table["mcc_best"], best)
    assert np.allclose(table["mean_regret"], best - table["mcc_chosen"])
    choices = pd.read_csv(tiny_run / "simulation" / "regret_choices.tsv", sep="\t").set_index("criterion")
    selection = pd.read_csv(tiny_run / "simulation" / "selection.tsv", sep="\t")
    selected = selection["selected"] & (selection["method"] == "svae_plus")
    assert choices.loc["udr", "chosen"] == selection.loc[selected, "run"].item()  # the selection's choice
    assert (choices["regret"] >= 0).all() and (choices["candidates"] == 2).all()


def test_table1_and_figure(tiny_run):
    table = pd.read_csv(tiny_run / "simulation" / "table1.tsv", sep="\t")
    models = ["VAE", "β-VAE", "iVAE", "sVAE", "sVAE+"]
    assert list(table["model"]) == models + ["sVAE+"] + models  # every setting, then the selected ones
    assert list(table["selection"]) == ["fixed"] * 6 + ["UDR"] * 5
    fixed = table[table["selection"] == "fixed"]
    assert fixed.loc[fixed["model"] == "VAE", "F1"].item() == "–"
    assert (fixed.loc[fixed["model"] == "sVAE+", "F1 (signed)"] != "–").all()
    assert table["I-NLL"].astype(float).gt(0).all()
    for figure in ("methods", "inll"):
        for suffix in ("png", "pdf"):
            assert (tiny_run / "simulation" / "figures" / f"{figure}.{suffix}").stat().st_size > 1000


def test_run_outputs_are_loadable(tiny_run):
    run = tiny_run / "simulation" / "tiny" / "seed0" / "svae_plus" / "p4_alpha10"
    state = torch.load(run / "model.pt", weights_only=True)
    cfg = json.loads((run / "model.json").read_text())
    assert cfg["method"] == "svae_plus" and cfg["hyperparameters"]["alpha"] == 10
    assert state["prior.logits"].shape == (10, 4)
    hist = pd.read_csv(run / "history.tsv", sep="\t")
    assert list(hist["epoch"]) == [1, 2, 3, 4] and hist["mask_density"].between(0, 1).all()
    data = anndata.read_h5ad(tiny_run / "simulation" / "tiny" / "seed0" / "data.h5ad")
    with np.load(run / "latents.npz") as npz:
        assert npz["z_mean"].shape == (data.n_obs, 4)
    assert set(data.obs["split"]) == {"train", "heldout"}
    assert data.uns["targets"].shape == (10, 4) and data.obsm["z_true"].shape == (data.n_obs, 4)
    # the transfer protocol: scores, per-perturbation table and each step's model
    heldout = json.loads((run / "transfer" / "heldout.json").read_text())
    for key in ("elbo_train", "elbo_val", "elbo_heldout_before", "elbo_heldout", "iwelbo_heldout", "inll"):
        assert np.isfinite(heldout[key]), key
    per_pert = pd.read_csv(run / "transfer" / "heldout_perturbations.tsv", sep="\t")
    assert list(per_pert["perturbation"]) == ["pert_008", "pert_009"]
    assert per_pert["inll"].mean() == pytest.approx(heldout["inll"])
    trained = torch.load(run / "model.pt", weights_only=True)
    tuned = torch.load(run / "transfer" / "finetuned.pt", weights_only=True)
    assert bool(tuned["prior.mask_frozen"]) and not bool(trained["prior.mask_frozen"])
    assert torch.equal(tuned["prior.fixed_mask"][8:], torch.ones(2, 4))
    retrained = torch.load(run / "transfer" / "retrained.pt", weights_only=True)
    assert torch.equal(tuned["decoder.0.weight"], retrained["decoder.0.weight"])
    # checkpoints are removed once a run completes
    assert not list((tiny_run / "checkpoints").rglob("*.pt"))


def test_stacked_jobs_train_the_seeds_settings_and_replicates_of_a_method(tmp_path):
    """stack_models: the seeds, settings and replicates of a method train in stacked jobs of
    at most stack_models models, the runs' transfers likewise; the later steps read their
    outputs as those of one-model jobs."""
    jobs = planned_jobs(tmp_path, "--config", "stack_models=16", "stack_methods=false")
    # default config, a stack per method: one job per method (each: one setting x 2 seeds)
    assert stacked_jobs(jobs) == {"train_simulation": 5, "transfer_simulation": 5, "train_replogle": 0,
                                  "transfer_replogle": 0}
    assert not any(one_model_jobs(jobs).values()) and jobs["evaluate"] == 10
    # sVAE+ at 2 alphas x 2 seeds x 3 replicates = 12 models in stacks of 4: 3 training jobs,
    # and its 4 runs' transfer in 1
    config = ("--configfile", str(TINY), "--config", "stack_models=4", "stack_methods=false", "seeds=[0,1]",
              "methods=[svae_plus]")
    assert stacked_jobs(planned_jobs(tmp_path, *config))["train_simulation"] == 3
    runs = [f"results/simulation/tiny/seed{s}/svae_plus/p4_alpha{a}" for s in (0, 1) for a in (10, 30)]
    snakemake(*[run + "/metrics.json" for run in runs], "--cores", "2", "--directory", str(tmp_path), *config)
    weights = []
    for run in runs:
        folder = tmp_path / run
        info = json.loads((folder / "train_info.json").read_text())
        assert info["stacked_models"] == 4 and info["epochs_run"] == 4
        # each run trained with its own setting (and kept it)
        assert json.loads((folder / "model.json").read_text())["hyperparameters"]["alpha"] == float(run.rsplit("alpha", 1)[1])
        hist = pd.read_csv(folder / "history.tsv", sep="\t")
        assert list(hist["epoch"]) == [1, 2, 3, 4] and np.isfinite(hist["elbo_val"]).all()
        assert np.isfinite(json.loads((folder / "metrics.json").read_text())["mcc_pearson"])
        weights.append(torch.load(folder / "model.pt", weights_only=True)["decoder.0.weight"])
        heldout = json.loads((folder / "transfer" / "heldout.json").read_text())  # the stacked transfer's
        assert np.isfinite(heldout["inll"]) and heldout["retrain_epochs_run"] >= 1
        assert json.loads((folder / "transfer" / "finetuned.json").read_text())["hyperparameters"]["alpha"] == info_alpha(folder)
        assert json.loads((folder / "metrics.json").read_text())["udr_models"] == 3
        assert json.loads((folder / "replicate2" / "train_info.json").read_text())["stacked_models"] == 4
    assert len({w.sum().item() for w in weights}) == 4  # four runs, four models
    logs = tmp_path / "results" / "logs"
    assert (logs / "train" / "stacked" / "simulation_tiny_svae_plus_p4_part3.benchmark.tsv").exists()
    assert (logs / "transfer" / "stacked" / "simulation_tiny_svae_plus_p4.benchmark.tsv").exists()
    assert not list((tmp_path / "results" / "checkpoints").rglob("*.pt"))  # removed once done


def info_alpha(folder) -> float:
    return json.loads((folder / "model.json").read_text())["hyperparameters"]["alpha"]


def test_stacked_training_refuses_batch_norm_and_names_a_renamed_key(tmp_path):
    res = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(TINY), "--config",
                    "stack_seeds=true", check=False)
    assert res.returncode != 0 and "stack_seeds: replaced by stack_models" in res.stdout + res.stderr
    res = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(TINY), "--config",
                    "stack_models=4", "model={'batch_norm': True}", check=False)
    assert res.returncode != 0 and "model.batch_norm" in res.stdout + res.stderr


def test_enrichment_of_the_latents(tiny_run):
    run = tiny_run / "simulation" / "tiny" / "seed0" / "svae_plus" / "p4_alpha10" / "enrichment"
    scores = pd.read_csv(run / "latent_gene_scores.tsv", sep="\t")
    assert len(scores) == 4 * 30 and set(scores["latent"]) == {0, 1, 2, 3}
    assert all(sorted(ranks) == list(range(1, 31)) for _, ranks in scores.groupby("latent")["rank"])
    gsea = pd.read_csv(run / "gsea.tsv", sep="\t")
    # the simulation's own gene sets: the genes each true latent drives, both directions
    assert set(gsea["library"]) == {"dataset"} and set(gsea["latent"]) == {0, 1, 2, 3}
    assert set(gsea["term"]) == {f"true z{j} {d}" for j in range(4) for d in ("up", "down")}
    assert gsea["fdr"].between(0, 1).all() and gsea["nes"].notna().all()
    targets = pd.read_csv(run / "latent_targets.tsv", sep="\t")
    assert set(targets["group"]) <= {f"targets of true z{j}" for j in range(4)} and len(targets) > 0
    assert targets["pval"].between(0, 1).all() and (targets["fdr"] >= targets["pval"] - 1e-12).all()
    for name in ("gsea_dotplot", "latent_targets"):
        assert (run / f"{name}.png").stat().st_size > 1000 and (run / f"{name}.pdf").exists()
    vae = tiny_run / "simulation" / "tiny" / "seed0" / "vae" / "p4" / "enrichment"
    assert pd.read_csv(vae / "latent_targets.tsv", sep="\t").empty  # no target graph


def test_report_contains_every_flagged_figure(tiny_run, tmp_path):
    figures = tiny_run / "simulation" / "figures"
    for name in ("methods", "inll", "table1"):
        assert (figures / f"{name}.png").stat().st_size > 1000 and (figures / f"{name}.pdf").exists()
    for name in ("target_graphs", "shift_heatmap", "training_curves"):
        assert (figures / "tiny_seed0" / f"{name}.png").stat().st_size > 1000
    report = tmp_path / "report.html"
    snakemake("--report", str(report), "--directory", str(tiny_run.parent), "--configfile", str(TINY))
    html = report.read_text()
    for name in ("methods", "inll", "table1", "target_graphs", "shift_heatmap", "training_curves"):
        assert f"{name}.png" in html, name
    # one enrichment dot plot and target heatmap per run (5 methods)
    assert html.count("gsea_dotplot.png") >= 5 and html.count("latent_targets.png") >= 5
    assert "Table 1: mean" in html and "interventional negative log-likelihood" in html  # captions


def test_rerun_has_nothing_to_do(tiny_run):
    res = snakemake("-n", "--directory", str(tiny_run.parent), "--configfile", str(TINY))
    assert "Nothing to be done" in res.stdout + res.stderr


def test_slurm_profile_dry_run_gives_training_a_gpu(tmp_path):
    """The SLURM profile with the executor plugin installed (nothing is submitted).

    The profile's use-conda is dropped here only because no conda exists on CI machines.
    """
    profile = tmp_path / "slurm"
    profile.mkdir()
    text = (REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text()
    assert "executor: slurm" in text and not re.search(r"slurm_extra:.*--gres", text)
    (profile / "config.yaml").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("use-conda")))

    def planned(*args):
        out = snakemake("-n", "--workflow-profile", str(profile), "--directory", str(tmp_path),
                        "--configfile", str(REPO / "config" / "config.yaml"), *args).stdout
        resources = {}
        for block in out.split("\n\n"):
            rule = re.search(r"^rule (\w+):", block, flags=re.M)
            found = re.search(r"resources: (.*)", block)
            if rule and found:
                resources.setdefault(rule.group(1), []).append(found.group(1))
        return resources

    # one model per job, its rule named by the workflow; sVAE at 2 lambdas, so that replicates train too
    resources = planned("--config", "stack_models=1", TWO_LAMBDAS)
    assert one_model_jobs({rule: len(found) for rule, found in resources.items()}) == {
        "train": 12, "train_replicate": 4, "transfer": 12}  # replicates: 2 settings x 2 seeds x 1 (UDR over 2 models)
    lines = [line for rule, found in resources.items() if rule.startswith(("train_", "transfer_")) for line in found]
    assert len(lines) == 28
    for line in lines:
        assert "gpu=1" in line and "slurm_partition=gpu" in line and "cpus_per_task=4" in line, line
    for line in resources["simulate"] + resources["summarize"]:
        assert "gpu=1" not in line and "slurm_partition=cpu" in line, line
    # the paper configuration stacks: its stacked jobs, named by the workflow, take the
    # profile's settings of train and transfer (the GPU partition)
    stacked = planned("--configfile", PAPER, "--", "simulation", "replogle")  # replogle: asked for explicitly
    lines = [line for rule, found in stacked.items() if rule.startswith(("train_stack_", "transfer_stack_"))
             for line in found]
    # simulation: 17 training and 6 transfer jobs; Replogle: 45 of each (one model each)
    assert len(lines) == 17 + 6 + 45 + 45
    assert all("gpu=1" in line and "slurm_partition=gpu" in line for line in lines)


def test_default_profile_is_read(tmp_path):
    res = snakemake("-n", "--quiet", "rules", "--directory", str(tmp_path),
                    "--configfile", str(REPO / "config" / "config.yaml"))
    assert "Using workflow specific profile" in res.stdout + res.stderr
    cfg = yaml.safe_load((REPO / "workflow" / "profiles" / "default" / "config.yaml").read_text())
    assert cfg["rerun-incomplete"] and cfg["printshellcmds"] and cfg["show-failed-logs"]


def test_table1_document_is_written_from_results(tiny_run, tmp_path):
    """docs/scripts/write_table1.py: Table 1 of the selected runs, every setting, the selection
    per seed and the deviation table, from results/ only, naming the code that produced them."""
    out = tmp_path / "table1.md"
    subprocess.run([sys.executable, str(REPO / "docs" / "scripts" / "write_table1.py"), "--paper", str(tiny_run),
                    "--simulation", "tiny", "--default", str(tmp_path / "none"),
                    "--ablations", str(tmp_path / "none.tsv"), "--out", str(out)], check=True)
    text = out.read_text()
    summary = pd.read_csv(tiny_run / "simulation" / "summary.tsv", sep="\t")
    assert f"Code: commit `{summary['code_version'].iloc[0]}`" in text
    selected = summary[summary["selected"] & (summary["method"] == "svae_plus")]
    mcc = f"{selected['mcc_pearson'].item():.3f}"
    row = next(line for line in text.splitlines() if line.startswith("| sVAE+ | alpha"))
    assert mcc in row and f"{selected['graph_f1_signed'].item():.3f}" in row
    assert "*sVAE+ (paper)*" in text and "## Selection per seed" in text
    assert "| sVAE+ | 0 |" in text  # the candidates of seed 0 with their UDR
    assert "not measured" in text  # deviations without an ablation say so


def test_iwelbo_particles_reproduces_the_transfers_i_nll(tiny_run, tmp_path):
    """docs/scripts/iwelbo_particles.py scores a run's step-3 model as the transfer does: at the
    transfer's particle count and seed it gives the I-NLL of heldout.json exactly."""
    out = tmp_path / "particles.tsv"
    res = subprocess.run([sys.executable, str(REPO / "docs" / "scripts" / "iwelbo_particles.py"), str(tiny_run),
                          "--particles", "10", "50", "--draws", "1", "--tsv", str(out)],
                         check=True, capture_output=True, text=True)
    table = pd.read_csv(out, sep="\t")
    n_runs = len(list(tiny_run.glob("simulation/*/seed*/*/*/transfer/finetuned.pt")))
    assert n_runs > 0 and len(table) == 2 * n_runs
    assert table.loc[table["particles"] == 50, "reproduced"].astype(bool).all()
    assert table.loc[table["particles"] == 10, "reproduced"].isna().all()
    assert f"reproduced exactly by draw 0: {n_runs} of {n_runs} runs" in res.stdout


def test_a_setting_without_transfer_is_evaluated_and_drawn_without_i_nll(tmp_path):
    """``transfer: false`` on a simulation setting (the paper's p sweep): its runs get no
    transfer job, their metrics an I-NLL of NaN, and the summary and figures are still drawn
    (the other setting's I-NLL intact)."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["simulations"].append({**cfg["simulations"][0], "name": "tinyp3", "n_latent": 3, "transfer": False})
    cfg.update(methods=["svae_plus"], hyperparameters={"alpha": [10]})
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(tmp_path, "--configfile", str(path), targets=("simulation",))
    assert stacked_jobs(jobs)["transfer_simulation"] == 1 and jobs["evaluate"] == 2
    snakemake("simulation", "--cores", "2", "--directory", str(tmp_path), "--configfile", str(path))
    summary = pd.read_csv(tmp_path / "results" / "simulation" / "summary.tsv", sep="\t").set_index("simulation")
    assert np.isnan(summary.loc["tinyp3", "inll"]) and np.isfinite(summary.loc["tiny", "inll"])
    assert np.isfinite(summary.loc["tinyp3", "mcc_pearson"])
    assert not (tmp_path / "results/simulation/tinyp3/seed0/svae_plus/p3_alpha10/transfer").exists()
    assert (tmp_path / "results/simulation/figures/inll.png").exists()


def test_the_interim_scores_and_the_sign_choices_reproduce_the_evaluation(tiny_run, tmp_path):
    """docs/scripts/interim_metrics.py scores the trained runs as the evaluation does and picks
    the settings the summarize rule picks; docs/scripts/sign_flips.py reproduces each run's
    signed and |r|-matched graph F1 from its own sign choice and the |r| matching's."""
    interim = tmp_path / "interim.tsv"
    subprocess.run([sys.executable, str(REPO / "docs" / "scripts" / "interim_metrics.py"), str(tiny_run),
                    "--simulation", "tiny", "--tsv", str(interim)], check=True, capture_output=True, text=True)
    got = pd.read_csv(interim, sep="\t").set_index(["method", "run", "seed"]).sort_index()
    summary = pd.read_csv(tiny_run / "simulation" / "summary.tsv", sep="\t")
    want = summary.set_index(["method", "run", "seed"]).sort_index()
    assert list(got.index) == list(want.index) and got["evaluated"].all()
    for col in ("mcc_pearson", "r2", "graph_f1_all", "graph_f1_signed", "mask_density", "udr"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), err_msg=col)
    assert (got["selected"] == want["selected"].astype(bool)).all()
    flips = tmp_path / "flips.tsv"
    res = subprocess.run([sys.executable, str(REPO / "docs" / "scripts" / "sign_flips.py"), str(tiny_run),
                          "--simulation", "tiny", "--tsv", str(flips)], check=True, capture_output=True, text=True)
    table = pd.read_csv(flips, sep="\t")
    graphs = summary["graph_f1_signed"].notna().sum()
    assert len(table) == graphs > 0 and table["reproduced"].all() and (table["patterns"] == 2**4).all()
    assert f"reproduced from metrics.json: {graphs} of {graphs} runs" in res.stdout
