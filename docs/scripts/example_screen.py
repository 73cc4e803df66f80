"""Write a screen as scPerturb publishes them, from the paper's generative model, with its truth.

    python docs/scripts/example_screen.py resources/screens/example.h5ad

The layout is the one users bring and no test of ours generates: raw counts in
``layers["counts"]`` (CSR), a log-normalised ``X`` (scanpy ``normalize_total`` + ``log1p``),
``obs["perturbation"]`` with controls labelled ``control`` and pairs joined by ``_``,
scPerturb's ``perturbation_type``, ``nperts`` and ``ncounts`` columns, var indexed by gene
symbol. The cells come from the simulation's model (sparseshift.simulate: sparse shifts of
latents decoded by a random MLP, Poisson counts): controls z ~ N(0, I), a perturbation a
z ~ N(mu_a, I), a pair z ~ N(mu_a + mu_b, I). The truth goes into ``uns["truth"]``
(perturbation x latent targets and shifts, singles only) and ``obsm["z_true"]``, which the
pipeline never reads, so that the answers can be checked (``--check RESULTS``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift

from sparseshift.simulate import SimulationConfig, decode, random_decoder, sample_targets  # noqa: E402


def write_example(path: Path, seed: int = 0, n_perturbations: int = 30, n_pairs: int = 6, cells: int = 200,
                  controls: int = 1000, n_latent: int = 8, n_genes: int = 200) -> None:
    import anndata
    import pandas as pd
    import scanpy as sc
    import scipy.sparse as sp

    cfg = SimulationConfig(n_latent=n_latent, n_perturbations=n_perturbations, n_heldout=0, n_genes=n_genes,
                           cells_per_perturbation=cells, library_size=5000, softmax_over="genes", seed=seed)
    rng = np.random.default_rng(seed)
    targets, shifts = sample_targets(cfg, rng)
    weights = random_decoder(cfg, rng)
    names = [f"GENE{i:02d}" for i in range(n_perturbations)]
    pairs = [tuple(sorted(rng.choice(n_perturbations, size=2, replace=False))) for _ in range(n_pairs)]
    groups = [("control", np.zeros(n_latent), controls, 0)]
    groups += [(names[a], shifts[a], cells, 1) for a in range(n_perturbations)]
    groups += [(f"{names[a]}_{names[b]}", shifts[a] + shifts[b], cells, 2) for a, b in pairs]
    labels = np.concatenate([[label] * n for label, _, n, _ in groups])
    mean = np.concatenate([np.tile(mu, (n, 1)) for _, mu, n, _ in groups])
    z = mean + rng.standard_normal(mean.shape)
    library = rng.lognormal(np.log(cfg.library_size), 0.3, size=(len(z), 1))
    counts = rng.poisson(library * decode(weights, z, standardize_logits=True)).astype(np.float32)
    obs = pd.DataFrame({
        "perturbation": pd.Categorical(labels),
        "perturbation_type": "CRISPR",
        "nperts": np.concatenate([[k] * n for _, _, n, k in groups]),
        "ncounts": counts.sum(1),
    }, index=[f"cell{i:06d}" for i in range(len(z))])
    var = pd.DataFrame(index=[f"SYM{g:03d}" for g in range(n_genes)])
    adata = anndata.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var, layers={"counts": sp.csr_matrix(counts)},
                            obsm={"z_true": z.astype(np.float32)})
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.uns["truth"] = {"perturbations": names, "targets": targets.astype(np.int8),
                          "shifts": shifts.astype(np.float32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    print(f"wrote {path}: {adata.n_obs} cells x {adata.n_vars} genes, {n_perturbations} perturbations, "
          f"{n_pairs} pairs, {controls} controls")


def check(path: Path, results: Path, name: str) -> None:
    """The screen's answers against its truth: Pearson MCC of each method's latents, and the
    target F1 of the graph methods on the single perturbations (latents matched by |r|)."""
    import anndata
    import pandas as pd

    from sparseshift import metrics

    truth = anndata.read_h5ad(path, backed="r")
    z_true = pd.DataFrame(truth.obsm["z_true"], index=truth.obs_names)
    targets = np.asarray(truth.uns["truth"]["targets"]).astype(bool)
    singles = list(truth.uns["truth"]["perturbations"])
    for folder in sorted((results / "screens" / name).glob("*/latents.h5ad")):
        method = folder.parent.name
        out = anndata.read_h5ad(folder)
        z = out.obsm[f"X_{method}"]
        mcc, rows, cols = metrics.match_latents(z_true.loc[out.obs_names].to_numpy(), z, "pearson")
        line = f"{method:10s} Pearson MCC {mcc:.3f}"
        table = pd.read_csv(folder.parent / "targets.tsv", sep="\t")
        if len(table):
            learned = table.pivot(index="perturbation", columns="latent", values="target").loc[singles]
            graph = learned.to_numpy().astype(bool)
            f1 = metrics.graph_metrics(targets, graph.astype(float), rows, cols, learned_binary=graph)["graph_f1"]
            line += f", target F1 {f1:.3f} (|r| matching, the single perturbations)"
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--check", type=Path, metavar="RESULTS", help="score a finished run's answers")
    parser.add_argument("--name", default="example", help="the screen's name in the config")
    args = parser.parse_args()
    if args.check:
        check(args.path, args.check, args.name)
    else:
        write_example(args.path)
