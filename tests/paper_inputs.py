"""Synthetic results of the configurations that the paper tables read: the paper run and the
default run (``summary.tsv``, ``selection.tsv``, datasets), the ablations (``ablations.tsv``,
posterior means, datasets), the particle and sign-choice tables. Shared by the tests of the
paper tables (tests/test_paper_tables.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
# method -> its candidate settings in the paper run (the first is the ablations' fixed one)
SETTINGS = {"vae": ["p15"], "beta_vae": ["p15_beta8", "p15_beta10"], "ivae": ["p15"],
            "svae": ["p15_lambda10", "p15_lambda1"], "svae_plus": ["p15_alpha100", "p15_alpha80"]}
METRICS = ["mcc_pearson", "mcc_spearman", "r2", "graph_f1", "graph_f1_all", "graph_precision_signed",
           "graph_recall_signed", "graph_f1_signed", "elbo_val", "inll", "mask_density", "udr"]
# ablation -> (method, its run folder, beta) trained in it
ABLATION_RUNS = {
    "baseline": [("svae_plus", "p15_alpha100", 1.0), ("vae", "p15", 1.0), ("beta_vae", "p15_beta8", 8.0),
                 ("ivae", "p15", 1.0)],
    "cells500": [("svae_plus", "p15_alpha100", 1.0)],
    "text_emission": [("svae_plus", "p15_alpha100", 1.0), ("beta_vae", "p15_beta8", 8.0)],
    "released_ivae": [("svae", "p15_lambda0", 1.0)],
    "beta2": [("beta_vae", "p15_beta2", 2.0)],
    "beta4": [("beta_vae", "p15_beta4", 4.0)],
}


def head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def dataset(path: Path, rng: np.random.Generator, counts: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    adata = anndata.AnnData(X=rng.poisson(counts, size=(20, 8)).astype(np.float32))
    adata.uns["targets"] = (rng.random((10, 15)) < 0.2).astype(np.int64)
    adata.write_h5ad(path)


def run_tables(rng: np.random.Generator, simulation: str, seeds: range, version: str):
    """A summary.tsv (every setting of every method on every seed, the best UDR selected) and
    its selection.tsv."""
    rows = []
    for method, runs in SETTINGS.items():
        for run in runs:
            for seed in seeds:
                values = dict(zip(METRICS, rng.uniform(0.1, 0.95, len(METRICS))))
                values.update(elbo_val=-rng.uniform(300, 400), inll=rng.uniform(300, 400))
                rows.append({"simulation": simulation, "method": method, "run": run, "seed": seed, "n_latent": 15,
                             **values, "code_version": version, "train_code_version": version})
    summary = pd.DataFrame(rows)
    best = summary.groupby(["method", "seed"])["udr"].transform("max")
    summary["selected"] = summary["udr"] == best
    selection = summary[["simulation", "method", "seed", "run", "udr", "selected"]].assign(
        candidates=summary["method"].map(lambda m: len(SETTINGS[m])))
    return summary, selection


def make_inputs(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write every input under ``root``; the paths by name (paper, default, ablations, particles,
    sign_flips, verification, ablation_dir)."""
    rng = np.random.default_rng(seed)
    version = head()
    paths = {"paper": root / "paper", "default": root / "default", "ablation_dir": root / "ablations"}
    for name, simulation in (("paper", "paper"), ("default", "default_sim")):
        folder = paths[name] / "simulation"
        folder.mkdir(parents=True)
        summary, selection = run_tables(rng, simulation, range(3), version)
        summary.to_csv(folder / "summary.tsv", sep="\t", index=False)
        selection.to_csv(folder / "selection.tsv", sep="\t", index=False)
    for s in range(2):
        dataset(paths["paper"] / "simulation" / "paper" / f"seed{s}" / "data.h5ad", rng, 5.0)
    rows = []
    for ablation, trained in ABLATION_RUNS.items():
        counts = 50.0 if ablation == "text_emission" else 5.0
        dataset(paths["ablation_dir"] / ablation / "simulation" / "paper" / "seed0" / "data.h5ad", rng, counts)
        for method, run, beta in trained:
            for s in range(3 if ablation == "baseline" else 2):
                values = dict(zip(METRICS, rng.uniform(0.1, 0.95, len(METRICS))))
                values.update(inll=rng.uniform(300, 400), elbo_val=-rng.uniform(300, 400))
                rows.append({"ablation": ablation, "method": method, "run": run, "seed": s, "beta": beta, **values})
                folder = paths["ablation_dir"] / ablation / "simulation" / "paper" / f"seed{s}" / method / run
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "metrics.json").write_text(json.dumps({k: v for k, v in rows[-1].items() if k != "ablation"}))
                scale = np.where(np.arange(15) < rng.integers(2, 15), 1.0, 1e-3)
                np.savez(folder / "latents.npz", z_mean=rng.normal(size=(50, 15)) * scale)
    paths["ablations"] = paths["ablation_dir"] / "ablations.tsv"
    pd.DataFrame(rows).to_csv(paths["ablations"], sep="\t", index=False)
    particles = [{"run": f"r{i}", "method": m, "particles": p, "inll": 340.0 + i + (p == 1000) * (i + 1),
                  "draw_spread": 0.1 * i, "draws": "a / b"}
                 for i, m in enumerate(["svae_plus", "ivae"]) for p in (5000, 1000)]
    paths["particles"] = paths["ablation_dir"] / "iwelbo_particles.tsv"
    pd.DataFrame(particles).to_csv(paths["particles"], sep="\t", index=False)
    summary = pd.read_csv(paths["paper"] / "simulation" / "summary.tsv", sep="\t")
    chosen = summary[summary["selected"]]
    flips = pd.DataFrame({"method": chosen["method"], "setting": chosen["run"], "seed": chosen["seed"],
                          "f1_signed": chosen["graph_f1_signed"], "sign_mean": rng.uniform(0.3, 0.6, len(chosen)),
                          "sign_sd": rng.uniform(0.01, 0.1, len(chosen)),
                          "share_at_paper": rng.uniform(0, 1, len(chosen)), "f1_aligned": chosen["graph_f1_all"]})
    paths["sign_flips"] = paths["paper"] / "simulation" / "sign_flips.tsv"
    flips.to_csv(paths["sign_flips"], sep="\t", index=False)
    paths["verification"] = root / "verification.json"
    paths["verification"].write_text(json.dumps({"head": version, "runs": 2, "identical": 2, "methods": ["vae"]}))
    return paths
