"""What each learned latent means: gene scores, gene-set enrichment, targeting perturbations.

For a trained model and its dataset:

* **Gene scores** (:func:`latent_gene_scores`): for latent k and gene g, the mean change of
  log normalised expression, ``log softmax(f(z))_g``, when z_k moves by one prior standard
  deviation (a central difference, z_k ± 1/2) around the posterior means of the cells. The
  decoder is non-linear, so the effect of a latent depends on where the cells sit; averaging
  finite differences over the cells weights it by where the data are, and a one-sd step is
  the scale of the prior. Log normalised expression makes the library size cancel and puts
  genes of different abundance on one scale (a log fold change).
* **Preranked GSEA** (:func:`gsea`) of each latent's gene scores with gseapy, against local
  gene sets only (GMT files and the dataset's own sets); positive NES: the set rises with the
  latent, negative: it falls.
* **Latent targets** (:func:`latent_targets`), for priors that learn a target graph: the
  perturbations whose mask hits each latent, and the over-representation of perturbation
  groups among them (hypergeometric test, Benjamini-Hochberg FDR).

Their figures (:func:`plot_gsea_dotplot`, :func:`plot_latent_targets`) and the job of one
trained run that writes all of them (:func:`enrichment_from_files`, the ``enrichment`` rule)
follow.
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.stats
import seaborn as sns
import torch

from . import io
from .io import InputError
from .model import SparseShiftVAE
from .plotting import save_figure
from .data import count_matrix, dataset_perturbations, perturbation_labels, trained_perturbations, training_cells
from .io import read_dataset

log = logging.getLogger(__name__)

GSEA_COLUMNS = ["latent", "library", "term", "size", "es", "nes", "pval", "fdr", "leading_edge"]
TARGET_COLUMNS = [
    "latent", "group", "n_group", "n_targeting", "overlap", "pval", "fdr", "perturbations", "targeting",
]


@torch.no_grad()
def latent_gene_scores(model, x: torch.Tensor, *, delta: float = 1.0, chunk: int = 1024) -> np.ndarray:
    """(n_latent, n_genes) mean change of log normalised expression per ``delta`` step of a latent.

    ``x`` are the counts of the cells to average over (their posterior means are used);
    deterministic: no sampling.
    """
    model.eval()
    p = model.cfg.n_latent
    steps = delta / 2 * torch.eye(p, dtype=x.dtype, device=x.device)  # (p, p): row k moves z_k
    total = torch.zeros(p, model.cfg.n_genes, dtype=torch.float64, device=x.device)
    for xs in x.split(chunk):
        z = model.encode(xs).loc  # (c, p)
        up = model.decoder(z[None] + steps[:, None]).log_softmax(-1)  # (p, c, genes)
        down = model.decoder(z[None] - steps[:, None]).log_softmax(-1)
        total += (up - down).sum(1).double()
    return (total / x.shape[0]).cpu().numpy()


def scores_frame(scores: np.ndarray, genes) -> pd.DataFrame:
    """Long table: one row per latent and gene, ranked within each latent."""
    df = pd.DataFrame(scores.T, index=pd.Index(genes, name="gene"), columns=range(scores.shape[0]))
    long = df.rename_axis(columns="latent").stack().rename("score").reset_index()
    long["rank"] = long.groupby("latent")["score"].rank(ascending=False, method="first").astype(int)
    return long.sort_values(["latent", "rank"])[["latent", "gene", "score", "rank"]].reset_index(drop=True)


def read_gmt(path) -> dict[str, list[str]]:
    """Gene sets of a GMT file (plain or gzipped): name, description, genes, tab-separated."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    sets = {}
    try:
        with opener(path, "rt") as fh:
            for n, line in enumerate(fh, 1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    raise InputError(path, f"line {n}", "name, description and genes separated by tabs", line[:80])
                sets[parts[0]] = [g for g in parts[2:] if g]
    except OSError as err:
        raise InputError(path, "(file)", "a readable GMT file", str(err)) from err
    return sets


def dataset_gene_sets(adata) -> dict[str, list[str]]:
    """The dataset's own gene sets (``uns["gene_sets"]``: a simulation's true latent programs,
    Replogle's expression programs)."""
    return {name: [str(g) for g in genes] for name, genes in dict(adata.uns.get("gene_sets", {})).items()}


def gsea(
    scores: np.ndarray,
    genes,
    libraries: dict[str, dict[str, list[str]]],
    *,
    permutations: int = 100,
    min_size: int = 5,
    max_size: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """gseapy preranked GSEA of every latent's scores against every library (local sets only).

    Sets are restricted to the genes scored; libraries with no set of ``min_size`` to
    ``max_size`` scored genes are skipped with a warning.
    """
    import gseapy

    genes = pd.Index(genes).astype(str)
    rows = []
    for name, sets in libraries.items():
        usable = {t: g for t, g in sets.items() if min_size <= len(genes.intersection(g)) <= max_size}
        if not usable:
            log.warning("gene-set library %s: no set with %d-%d of the %d genes scored", name,
                        min_size, max_size, len(genes))
            continue
        for k, latent_scores in enumerate(scores):
            ranking = pd.Series(latent_scores, index=genes).sort_values(ascending=False)
            res = gseapy.prerank(
                rnk=ranking, gene_sets=usable, permutation_num=permutations, min_size=min_size,
                max_size=max_size, seed=seed, threads=1, outdir=None, no_plot=True, verbose=False,
            ).res2d
            rows.append(
                pd.DataFrame(
                    {
                        "latent": k,
                        "library": name,
                        "term": res["Term"].astype(str),
                        "size": res["Tag %"].astype(str).str.split("/").str[1].astype(int),
                        "es": res["ES"].astype(float),
                        "nes": res["NES"].astype(float),
                        "pval": res["NOM p-val"].astype(float),
                        "fdr": res["FDR q-val"].astype(float),
                        "leading_edge": res["Lead_genes"].astype(str),
                    }
                )
            )
    if not rows:
        return pd.DataFrame(columns=GSEA_COLUMNS)
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values(["latent", "fdr", "pval", "nes"], key=_abs_if_nes).reset_index(drop=True)


def _abs_if_nes(col: pd.Series) -> pd.Series:
    return -col.abs() if col.name == "nes" else col


def perturbation_groups(adata) -> dict[str, list[str]]:
    """Groups of perturbations to test among a latent's targeting perturbations: Replogle's
    Table S3 clusters (``obs["cluster"]``) or, in a simulation, the perturbations truly
    targeting each latent (``targets of true z<j>``)."""
    if "cluster" in adata.obs:
        pairs = adata.obs[["perturbation", "cluster"]].astype(str).drop_duplicates()
        return {c: sorted(g["perturbation"]) for c, g in pairs.groupby("cluster")}
    if "targets" in adata.uns:
        names = np.asarray(adata.uns["perturbations"]).astype(str)
        targets = np.asarray(adata.uns["targets"]).astype(bool)
        return {f"targets of true z{j}": sorted(names[targets[:, j]]) for j in range(targets.shape[1])}
    return {}


def hypergeometric_sf(overlap: int, population: int, group: int, draws: int) -> float:
    """P(X >= overlap) for X ~ Hypergeometric(population, group successes, draws)."""
    return float(scipy.stats.hypergeom.sf(overlap - 1, population, group, draws))


def latent_targets(graph: np.ndarray, perturbations, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Over-representation of each perturbation group among the perturbations targeting each latent.

    ``graph`` (n_perturbations, n_latent) is the learned binary target graph restricted to
    the perturbations it was learned on (``perturbations``), which are the population of the
    test. One row per latent and group; FDR by Benjamini-Hochberg over the whole table;
    ``perturbations``: the group's members targeting the latent, ``targeting``: every
    perturbation targeting it.
    """
    perturbations = np.asarray(perturbations).astype(str)
    population = len(perturbations)
    rows = []
    for k in range(graph.shape[1]):
        targeting = set(perturbations[graph[:, k].astype(bool)])
        listed = ",".join(sorted(targeting))
        for name, members in groups.items():
            members = set(members) & set(perturbations)
            if not members:
                continue
            overlap = sorted(targeting & members)
            rows.append(
                {
                    "latent": k,
                    "group": name,
                    "n_group": len(members),
                    "n_targeting": len(targeting),
                    "overlap": len(overlap),
                    "pval": hypergeometric_sf(len(overlap), population, len(members), len(targeting)),
                    "perturbations": ",".join(overlap),
                    "targeting": listed,
                }
            )
    if not rows:
        return pd.DataFrame(columns=TARGET_COLUMNS)
    out = pd.DataFrame(rows)
    out["fdr"] = scipy.stats.false_discovery_control(out["pval"].to_numpy(), method="bh")
    return out[TARGET_COLUMNS].sort_values(["latent", "pval", "group"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- figures


def plot_gsea_dotplot(table: pd.DataFrame, paths, top: int = 3, max_terms: int = 40) -> None:
    """Latents × their ``top`` gene sets (lowest FDR, then largest |NES|; at most ``max_terms``
    rows, the most significant first): colour NES, size −log10 FDR."""
    fig, ax = plt.subplots(figsize=(8, 6))
    if table.empty:
        ax.text(0.5, 0.5, "no gene set could be tested", ha="center", va="center")
        ax.set_axis_off()
        return save_figure(fig, paths)
    best = table.assign(abs_nes=table["nes"].abs()).sort_values(["fdr", "abs_nes"], ascending=[True, False])
    terms = list(dict.fromkeys(best.groupby("latent").head(top)["term"]))[:max_terms]
    data = table[table["term"].isin(terms)].copy()
    data["−log10 FDR"] = -np.log10(data["fdr"].clip(lower=1e-3))
    data["NES"] = data["nes"]
    data["latent"] = data["latent"].astype(str)
    limit = float(data["nes"].abs().max()) or 1.0
    fig.set_size_inches(max(6, 0.45 * data["latent"].nunique() + 4), max(4, 0.3 * len(terms) + 1.5))
    sns.scatterplot(
        data=data, x="latent", y="term", hue="NES", size="−log10 FDR", palette="vlag",
        hue_norm=(-limit, limit), sizes=(10, 250), size_norm=(0, 3), ax=ax, edgecolor="0.3",
    )
    ax.set(xlabel="learned latent", ylabel="", title="gene-set enrichment of latent gene scores (GSEA)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    save_figure(fig, paths)


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def plot_latent_targets(table: pd.DataFrame, paths) -> None:
    """Heatmap: share of each perturbation group targeting each latent; * where FDR < 0.05."""
    fig, ax = plt.subplots(figsize=(8, 5))
    if table.empty:
        ax.text(0.5, 0.5, "no learned target graph", ha="center", va="center")
        ax.set_axis_off()
        return save_figure(fig, paths)
    share = table.assign(share=table["overlap"] / table["n_group"]).pivot(
        index="group", columns="latent", values="share")
    share = share.loc[sorted(share.index, key=_natural)]  # "z2" before "z10"
    stars = table.pivot(index="group", columns="latent", values="fdr").lt(0.05).map(lambda s: "*" if s else "")
    fig.set_size_inches(max(6, 0.5 * share.shape[1] + 3), max(3, 0.35 * share.shape[0] + 1.5))
    sns.heatmap(share, vmin=0, vmax=1, cmap="rocket_r", annot=stars.loc[share.index, share.columns],
                fmt="", cbar_kws={"label": "share of the group's perturbations targeting the latent"}, ax=ax)
    ax.set(xlabel="learned latent", ylabel="perturbation group", title="latent targets (* FDR < 0.05)")
    save_figure(fig, paths)


# ----------------------------------------------------------------------------- the enrichment job


def enrichment_from_files(inputs: dict, settings: dict, outputs: dict) -> None:
    """The enrichment job of one trained run: latent gene scores, GSEA against the dataset's
    own gene sets and the configured GMT libraries, latent targets, and their figures."""
    adata = read_dataset(inputs["data"])
    model = SparseShiftVAE.load(inputs["weights"], inputs["config"])
    cells = np.flatnonzero(training_cells(adata))
    rng = np.random.default_rng(settings["seed"])
    if len(cells) > settings["max_cells"]:
        cells = np.sort(rng.choice(cells, settings["max_cells"], replace=False))
    x = torch.as_tensor(count_matrix(adata[cells], inputs["data"]))
    scores = latent_gene_scores(model, x, delta=settings["delta"])
    genes = adata.var["gene_name"] if "gene_name" in adata.var else adata.var_names
    io.write_tsv(scores_frame(scores, genes), outputs["scores"])

    libraries = {"dataset": dataset_gene_sets(adata)}
    for path in inputs.get("libraries", []):
        libraries[Path(path).name.split(".")[0]] = read_gmt(path)
    libraries = {name: sets for name, sets in libraries.items() if sets}
    table = gsea(
        scores, genes, libraries, permutations=settings["permutations"], min_size=settings["min_size"],
        max_size=settings["max_size"], seed=settings["seed"],
    )
    io.write_tsv(table, outputs["gsea"])

    graph = model.prior.target_graph()
    if graph is None:
        targets = pd.DataFrame(columns=TARGET_COLUMNS)
    else:
        perturbation_labels(adata, inputs["data"])  # checked
        names, _ = dataset_perturbations(adata, inputs["data"])
        learned = trained_perturbations(adata, inputs["data"])  # the graph's rows that were trained
        groups = perturbation_groups(adata)
        targets = latent_targets(graph.cpu().numpy()[learned], np.asarray(names)[learned], groups)
    io.write_tsv(targets, outputs["targets"])

    with io.atomic_path(outputs["dotplot_png"]) as png, io.atomic_path(outputs["dotplot_pdf"]) as pdf:
        plot_gsea_dotplot(table, [png, pdf])
    with io.atomic_path(outputs["targets_png"]) as png, io.atomic_path(outputs["targets_pdf"]) as pdf:
        plot_latent_targets(targets, [png, pdf])
    log.info("enrichment: %d latents x %d genes, %d gene-set tests, %d target tests",
             scores.shape[0], scores.shape[1], len(table), len(targets))
