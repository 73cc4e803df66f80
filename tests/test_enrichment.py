"""Latent gene scores, gene-set enrichment and latent targets (sparseshift.enrichment)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sparseshift import enrichment
from sparseshift.io import InputError
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.simulate import SimulationConfig, simulate

REPO = Path(__file__).resolve().parents[1]
N_GENES, N_LATENT = 60, 3
BLOCK = list(range(10, 20))  # the genes latent 1 drives, by construction


def wired_model(n_layers=1):
    """A model whose latent 1 drives BLOCK: hidden unit 0 = relu(z_1 + 5) (linear where cells
    are) feeds BLOCK with weight 2 (bias -10); the other latents feed random genes weakly."""
    torch.manual_seed(0)
    model = SparseShiftVAE(ModelConfig(method="vae", n_genes=N_GENES, n_latent=N_LATENT,
                                       n_perturbations=2, n_hidden=4, n_layers=n_layers))
    with torch.no_grad():
        first, last = model.decoder[0], model.decoder[-1]
        first.weight.zero_()
        first.bias.fill_(5.0)
        first.weight[0, 1] = 1.0
        first.weight[1, 0] = 1.0
        first.weight[2, 2] = 1.0
        last.weight.copy_(0.1 * torch.randn(N_GENES, 4))
        last.weight[:, 0] = 0.0
        last.weight[BLOCK, 0] = 2.0
        last.bias.zero_()
        last.bias[BLOCK] = -10.0  # block logits 2 z_1: a sixth of the mass where cells are
    return model


def cells(n=300, seed=0):
    return torch.poisson(torch.full((n, N_GENES), 20.0), generator=torch.Generator().manual_seed(seed))


def test_planted_gene_block_is_the_top_set_of_its_latent():
    torch.manual_seed(1)
    model = wired_model()
    scores = enrichment.latent_gene_scores(model, cells())
    assert scores.shape == (N_LATENT, N_GENES)
    # block genes rise with latent 1 by about 2 (log scale) per prior sd, the others fall slightly
    assert scores[1, BLOCK].min() > 1.5 and np.delete(scores[1], BLOCK).max() < 0
    genes = [f"g{i}" for i in range(N_GENES)]
    rng = np.random.default_rng(0)
    sets = {"planted block": [genes[i] for i in BLOCK]}
    sets.update({f"random {i}": list(rng.choice(genes, 10, replace=False)) for i in range(8)})
    table = enrichment.gsea(scores, genes, {"test": sets}, permutations=200, seed=0)
    top = table[table["latent"] == 1].iloc[0]
    assert top["term"] == "planted block" and top["nes"] > 0 and top["fdr"] < 0.05
    assert top["size"] == 10 and set(top["leading_edge"].split(";")) <= set(sets["planted block"])
    # the planted block is not the top set of the other latents
    assert (table[table["latent"] != 1].groupby("latent").head(1)["term"] != "planted block").all()
    assert list(table.columns) == enrichment.GSEA_COLUMNS


def test_gene_scores_of_a_linear_decoder_are_its_weights():
    """With logits = W z + b, a one-sd step of z_k changes log softmax_g by W_gk minus a
    constant shared by all genes: score differences between genes are weight differences."""
    torch.manual_seed(2)
    model = SparseShiftVAE(ModelConfig(method="vae", n_genes=N_GENES, n_latent=N_LATENT,
                                       n_perturbations=2, n_layers=0))
    scores = enrichment.latent_gene_scores(model, cells(50), delta=1.0)
    w = model.decoder[-1].weight.detach().numpy().T  # (latent, gene)
    np.testing.assert_allclose(scores - scores[:, :1], w - w[:, :1], atol=1e-4)
    half = enrichment.latent_gene_scores(model, cells(50), delta=0.5)
    np.testing.assert_allclose(half - half[:, :1], 0.5 * (w - w[:, :1]), atol=1e-4)


def test_hypergeometric_matches_the_counting_formula():
    def direct(x, population, group, draws):
        total = math.comb(population, draws)
        return sum(math.comb(group, i) * math.comb(population - group, draws - i)
                   for i in range(x, min(group, draws) + 1)) / total

    for args in [(3, 40, 5, 6), (1, 10, 2, 3), (0, 12, 4, 4), (5, 80, 20, 9)]:
        assert enrichment.hypergeometric_sf(*args) == pytest.approx(direct(*args), rel=1e-9)


def test_latent_targets_find_the_planted_group_and_fdr_is_monotone():
    names = np.array([f"p{i}" for i in range(30)])
    graph = np.zeros((30, 4), dtype=int)
    graph[:8, 2] = 1  # latent 2 is targeted by p0-p7 ...
    graph[[3, 11, 17, 25], 0] = 1
    graph[20:, 3] = 1
    groups = {"A": [f"p{i}" for i in range(8)], "B": [f"p{i}" for i in range(8, 16)],
              "C": [f"p{i}" for i in range(16, 30)], "absent": ["q1"]}
    table = enrichment.latent_targets(graph, names, groups)
    assert list(table.columns) == enrichment.TARGET_COLUMNS
    assert "absent" not in set(table["group"])
    best = table.loc[table["pval"].idxmin()]
    assert (best["latent"], best["group"], best["overlap"]) == (2, "A", 8)  # ... which group A is
    assert best["perturbations"] == ",".join(sorted(groups["A"])) == best["targeting"]
    latent0 = table[table["latent"] == 0].iloc[0]
    assert latent0["targeting"] == "p11,p17,p25,p3" and latent0["n_targeting"] == 4
    ordered = table.sort_values("pval")
    assert ordered["fdr"].is_monotonic_increasing and (table["fdr"] >= table["pval"]).all()


def test_read_gmt(tmp_path):
    path = tmp_path / "sets.gmt.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("set one\thttp://x\tA\tB\tC\nset two\tna\tD\n")
    assert enrichment.read_gmt(path) == {"set one": ["A", "B", "C"], "set two": ["D"]}
    bad = tmp_path / "bad.gmt"
    bad.write_text("only-a-name\n")
    with pytest.raises(InputError, match="line 1"):
        enrichment.read_gmt(bad)


def test_shipped_go_library_is_usable():
    sets = enrichment.read_gmt(REPO / "resources" / "genesets" / "go_bp_2022-07-01.gmt.gz")
    assert len(sets) > 5000
    sizes = [len(g) for g in sets.values()]
    assert min(sizes) >= 10 and max(sizes) <= 500
    splicing = next(g for name, g in sets.items() if name.startswith("mRNA splicing, via spliceosome"))
    assert {"SF3B1", "SNRPD3"} <= set(splicing)
    assert "licence" in (REPO / "resources" / "genesets" / "README.md").read_text().lower()


def test_simulation_gene_sets_and_perturbation_groups():
    adata = simulate(SimulationConfig(n_latent=3, n_perturbations=6, n_heldout=1, cells_per_perturbation=30,
                                      n_genes=40, seed=0))
    sets = enrichment.dataset_gene_sets(adata)
    assert sorted(sets) == [f"true z{j} {d}" for j in range(3) for d in ("down", "up")]
    assert all(len(g) == 5 for g in sets.values()) and not set(sets["true z0 up"]) & set(sets["true z0 down"])
    groups = enrichment.perturbation_groups(adata)
    targets = np.asarray(adata.uns["targets"]).astype(bool)
    assert groups["targets of true z1"] == sorted(np.asarray(adata.uns["perturbations"])[targets[:, 1]])
    clustered = adata.copy()
    clustered.obs["cluster"] = np.where(clustered.obs["perturbation_index"] < 3, "first", "second")
    assert enrichment.perturbation_groups(clustered) == {
        "first": ["pert_000", "pert_001", "pert_002"], "second": ["pert_003", "pert_004", "pert_005"]}


def test_empty_inputs_give_empty_tables():
    assert enrichment.gsea(np.zeros((2, 5)), list("abcde"), {"x": {"tiny": ["a"]}}).empty
    assert enrichment.latent_targets(np.zeros((3, 2)), ["a", "b", "c"], {}).empty
    empty = enrichment.scores_frame(np.zeros((0, 3)), list("abc"))  # no latent: no row
    assert empty.empty and list(empty.columns) == ["latent", "gene", "score", "rank"]
