"""Users' screens: any perturbation h5ad (scPerturb / pertpy conventions) made into a training
dataset, its checks, its exports, and the screens arm of the Snakefile end to end."""

from __future__ import annotations

import logging
import re

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import yaml
from fixtures.screens import screen_adata, screen_settings
from sparseshift.io import InputError
from sparseshift.model import ModelConfig, SparseShiftVAE
from sparseshift.screens.export import factor_table, target_table
from sparseshift.screens.prepare import canonical_label, prepare_screen
from test_workflow import TINY, snakemake


def prepared(tmp_path, adata, name="screen", gene_list=None, chunk_rows=16384, **settings):
    src, out = tmp_path / f"{name}.h5ad", tmp_path / f"{name}_data.h5ad"
    adata.write_h5ad(src)
    report = prepare_screen(src, screen_settings(**settings), out, gene_list=gene_list, chunk_rows=chunk_rows)
    return anndata.read_h5ad(out), report


def dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


LAYOUTS = [
    dict(counts_in="X", sparse=False),
    dict(counts_in="X", sparse=True),
    dict(counts_in="layer", sparse=False),
    dict(counts_in="layer", sparse=True, key="condition", control="ctrl"),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["X-dense", "X-csr", "layer-dense", "layer-csr-custom-keys"])
def test_every_layout_gives_the_same_dataset(tmp_path, layout):
    """Counts in X or in layers["counts"] (beside a log-normalised X), dense or CSR, under any
    obs key and control label: the same cells, labels and counts come out, read in blocks."""
    reference = screen_adata(n_perturbations=4)
    adata = screen_adata(n_perturbations=4, **layout)
    key, control = layout.get("key", "perturbation"), layout.get("control", "control")
    out, report = prepared(tmp_path, adata, perturbation_key=key, control=control, chunk_rows=7)
    assert report["counts"] == ("layers/counts" if layout["counts_in"] == "layer" else "X")
    np.testing.assert_array_equal(dense(out.X), dense(reference.X))  # every gene kept (n_genes 2000 > 60)
    expected = reference.obs["perturbation"].astype(str).to_numpy()
    np.testing.assert_array_equal(out.obs["perturbation"].astype(str), expected)
    assert out.obs_names.tolist() == reference.obs_names.tolist()
    assert list(out.uns["perturbations"]) == ["P00", "P01", "P02", "P03", "control"]
    assert set(out.obs["split"]) == {"train"} and out.uns["controls"].tolist() == [control]
    assert key in out.obs  # the input's obs columns are carried over
    assert sp.issparse(out.X) and out.X.dtype == np.float32


def test_combinations_are_parsed_and_canonical():
    assert canonical_label("B+A", {"ctrl"}, "+") == ("A+B", ["A", "B"])
    assert canonical_label("A+ctrl", {"ctrl"}, "+") == ("A", ["A"])  # GEARS' single perturbations
    assert canonical_label("ctrl", {"ctrl"}, "+") == ("control", [])
    assert canonical_label("A_B", {"ctrl"}, None) == ("A_B", ["A_B"])  # no separator: a label is a perturbation


def test_a_screen_with_combinations(tmp_path):
    adata = screen_adata(combinations=[(1, 0), (2, 3)], separator="_", counts_in="layer")
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str).replace({"P01_P00": "P01_P00"})
    out, report = prepared(tmp_path, adata, combination_separator="_", heldout=["P01_P00"])
    assert report["n_combinations"] == 2
    assert dict((k, list(v)) for k, v in out.uns["combinations"].items()) == {
        "P00_P01": ["P00", "P01"], "P02_P03": ["P02", "P03"]}
    assert list(out.uns["heldout_perturbations"]) == ["P00_P01"]  # named in the input's spelling
    assert set(out.obs.loc[out.obs["split"] == "heldout", "perturbation"]) == {"P00_P01"}
    # the members are the model's perturbations, a combination a condition: holding out a
    # combination of trained perturbations holds out no perturbation
    assert list(out.uns["perturbations"]) == ["P00", "P01", "P02", "P03", "P04", "P05", "control"]
    assert report["n_perturbations"] == 6


def test_min_and_max_cells(tmp_path, caplog):
    adata = screen_adata(n_perturbations=3, cells=30)
    keep = ~((adata.obs["perturbation"] == "P02").to_numpy() & (np.arange(adata.n_obs) % 3 > 0))
    adata = adata[keep].copy()  # P02 has 10 cells left
    with caplog.at_level(logging.WARNING):
        out, report = prepared(tmp_path, adata, min_cells=12, max_cells=20)
    assert report["dropped_perturbations"] == {"P02": 10} and "P02 (10)" in caplog.text
    counts = out.obs["perturbation"].value_counts()
    assert counts["P00"] == counts["P01"] == counts["control"] == 20
    again, _ = prepared(tmp_path, adata, name="again", min_cells=12, max_cells=20)
    assert again.obs_names.tolist() == out.obs_names.tolist()  # the same seed, the same sample
    other, _ = prepared(tmp_path, adata, name="other", min_cells=12, max_cells=20, seed=1)
    assert other.obs_names.tolist() != out.obs_names.tolist()


def test_heldout_fraction_is_drawn_with_the_seed(tmp_path):
    adata = screen_adata(n_perturbations=10, cells=12)
    out, _ = prepared(tmp_path, adata, heldout=0.3)
    held = list(out.uns["heldout_perturbations"])
    assert len(held) == 3 and "control" not in held
    again, _ = prepared(tmp_path, adata, name="again", heldout=0.3)
    assert list(again.uns["heldout_perturbations"]) == held


def test_highly_variable_genes_are_scanpys_on_the_counts(tmp_path):
    import scanpy as sc

    adata = screen_adata(n_perturbations=6, n_genes=80, counts_in="layer", batch_key="batch")
    out, report = prepared(tmp_path, adata, n_genes=25, batch_key="batch", chunk_rows=50)
    expected = sc.pp.highly_variable_genes(adata, layer="counts", flavor="seurat_v3", n_top_genes=25,
                                           batch_key="batch", inplace=False)
    assert report["gene_selection"] == "seurat_v3"
    assert out.var_names.tolist() == adata.var_names[expected["highly_variable"].to_numpy()].tolist()
    np.testing.assert_array_equal(dense(out.X), dense(adata[:, out.var_names].layers["counts"]))


def test_a_gene_list_warns_of_absent_genes_by_name(tmp_path, caplog):
    adata = screen_adata()
    with caplog.at_level(logging.WARNING):
        out, report = prepared(tmp_path, adata, gene_list=["GENE003", "GENE001", "NOTAGENE"])
    assert out.var_names.tolist() == ["GENE001", "GENE003"] and out.var["gene_name"].tolist() == ["GENE001", "GENE003"]
    assert report["genes_absent"] == ["NOTAGENE"] and "NOTAGENE" in caplog.text


# ----------------------------------------------------------------------------- bad input


def error_of(tmp_path, adata, **settings) -> str:
    src = tmp_path / "bad.h5ad"
    if adata is not None:
        adata.write_h5ad(src)
    else:
        src.write_text("not an h5ad")
    out = tmp_path / "out.h5ad"
    with pytest.raises(InputError) as err:
        prepare_screen(src, screen_settings(**settings), out, chunk_rows=16)
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written
    message = str(err.value)
    assert str(src) in message
    return message


def test_a_missing_perturbation_column_lists_the_columns(tmp_path):
    message = error_of(tmp_path, screen_adata(), perturbation_key="guide")
    assert "obs/guide" in message and "perturbation" in message and "nperts" in message


def test_no_control_cells_lists_the_frequent_labels(tmp_path):
    message = error_of(tmp_path, screen_adata(control="NT"))
    assert "obs/perturbation" in message and "['control']" in message and "NT (80)" in message


def test_log_normalised_x_without_counts_says_so(tmp_path):
    adata = screen_adata(counts_in="layer")
    del adata.layers["counts"]
    adata.layers["spliced"] = adata.X.copy()
    message = error_of(tmp_path, adata)
    assert "field 'X'" in message and "integer counts" in message and "normalised" in message
    assert "['spliced']" in message


def test_a_negative_count_in_a_middle_block_is_found(tmp_path):
    adata = screen_adata(sparse=True)
    x = adata.X.tolil()
    x[200, 5] = -3  # rows are read 16 at a time: block 13 of 23
    adata.X = x.tocsr()
    message = error_of(tmp_path, adata)
    assert "-3.0" in message and "row 200" in message and "GENE005" in message


def test_a_missing_counts_layer_names_the_layers(tmp_path):
    message = error_of(tmp_path, screen_adata(), counts="raw")
    assert "layers/raw" in message and "layers []" in message


def test_a_heldout_perturbation_not_in_the_data(tmp_path):
    message = error_of(tmp_path, screen_adata(), heldout=["P00", "P99"])
    assert "P99" in message and "heldout" in message


def test_a_file_that_is_not_an_h5ad(tmp_path):
    assert "a readable .h5ad file" in error_of(tmp_path, None)


@pytest.mark.parametrize(
    "screens, key",
    [
        ([{"name": "a", "h5ad": "{h5ad}"}, {"name": "a", "h5ad": "{h5ad}"}], "screens.1.name"),
        ([{"name": "a", "h5ad": "{h5ad}", "url": "http://127.0.0.1/a.h5ad"}], "screens.0"),
        ([{"name": "a", "h5ad": "/no/such/file.h5ad"}], "screens.0.h5ad"),
        ([{"name": "a", "h5ad": "{h5ad}", "methods": ["svae", "foo"]}], "screens.0.methods.1"),
        ([{"name": "a", "h5ad": "{h5ad}", "heldout": 1.5}], "screens.0.heldout"),
        ([{"name": "a b", "h5ad": "{h5ad}"}], "screens.0.name"),
    ],
)
def test_screen_config_errors_name_the_key(tmp_path, screens, key):
    h5ad = tmp_path / "s.h5ad"
    screen_adata().write_h5ad(h5ad)
    cfg = tmp_path / "screens.yaml"
    cfg.write_text(yaml.safe_dump({"screens": yaml.safe_load(yaml.safe_dump(screens).replace("{h5ad}", str(h5ad)))}))
    res = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(TINY), str(cfg), check=False)
    assert res.returncode != 0 and key in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------- exports


def test_target_table_of_the_masked_and_shifted_priors():
    perturbations = ["A", "B", "C"]
    for method in ("ivae", "svae_plus"):
        model = SparseShiftVAE(ModelConfig(method=method, n_genes=5, n_latent=4, n_perturbations=3))
        with torch.no_grad():
            model.prior.mu.copy_(torch.arange(12.0).reshape(3, 4) - 6)
            if method == "svae_plus":
                model.prior.logits.copy_(torch.tensor([[3.0, -3, -3, -3], [-3, 2, 2, -3], [-3, -3, -3, -3]]))
        table = target_table(model, perturbations, heldout=["C"])
        assert len(table) == 12 and table.loc[table.perturbation == "C", "split"].eq("heldout").all()
        row = table[(table.perturbation == "B") & (table.latent == 1)].iloc[0]
        assert row["shift"] == -1.0
        if method == "svae_plus":
            assert table.groupby("perturbation")["target"].sum().tolist() == [1, 2, 0]
            assert row["mask_probability"] == pytest.approx(1 / (1 + np.exp(-2.0)))
        else:  # iVAE: the 2 largest |shift| per perturbation, no mask
            assert table.groupby("perturbation")["target"].sum().tolist() == [2, 2, 2]
            assert table["mask_probability"].isna().all()
    vae = SparseShiftVAE(ModelConfig(method="vae", n_genes=5, n_latent=4, n_perturbations=3))
    assert target_table(vae, perturbations, []).empty


def test_factor_table_names_the_targeting_perturbations_and_terms():
    targets = pd.DataFrame({"perturbation": ["A", "A", "B", "B", "C", "C"], "split": ["train"] * 4 + ["heldout"] * 2,
                            "latent": [0, 1] * 3, "target": [True, False, True, True, True, False]})
    gsea = pd.DataFrame({"latent": [0, 0, 0, 1], "term": ["weak", "strong", "unsure", "other"],
                         "nes": [1.2, -2.5, 3.0, 1.9], "fdr": [0.1, 0.01, 0.5, 0.2]})
    table = factor_table(targets, gsea, 3)
    assert table["targeted_by"].tolist() == ["A, B", "B", ""]  # held-out C is not a learned target
    assert table["top_terms"][0] == "strong (NES -2.50, FDR 0.01); weak (NES +1.20, FDR 0.1)"
    assert table["top_terms"][2] == "" and factor_table(targets, None, 2)["top_terms"].eq("").all()


def test_a_screen_given_by_url_is_downloaded_first(tmp_path):
    cfg = tmp_path / "screens.yaml"
    cfg.write_text(yaml.safe_dump({"screens": [{"name": "remote", "url": "http://127.0.0.1:9/remote.h5ad",
                                                "md5": "0" * 32, "data_dir": str(tmp_path / "in")}]}))
    res = snakemake("screens", "-n", "--directory", str(tmp_path), "--configfile", str(TINY), str(cfg))
    assert re.search(r"download\s+1", res.stdout) and re.search(r"prepare_screen\s+1", res.stdout)
    assert f"{tmp_path / 'in'}/remote.h5ad" in res.stdout


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def screen_run(tmp_path_factory):
    """A scPerturb-style screen (counts in layers["counts"], log-normalised CSR X, combinations
    joined by "_", its own obs key and control label) through the screens arm."""
    work = tmp_path_factory.mktemp("screen_run")
    adata = screen_adata(n_perturbations=6, cells=50, controls=100, n_genes=80, combinations=[(0, 1)],
                         separator="_", key="condition", control="ctrl", counts_in="layer", sparse=True)
    adata.write_h5ad(work / "screen.h5ad")
    (work / "config.yaml").write_text(yaml.safe_dump({"screens": [{
        "name": "demo", "h5ad": str(work / "screen.h5ad"), "perturbation_key": "condition", "control": "ctrl",
        "combination_separator": "_", "n_genes": 40, "n_latent": 3, "heldout": ["P05"], "methods": ["vae", "ivae", "svae_plus"],
    }], "hyperparameters": {"alpha": [10]}}))
    res = snakemake("screen_demo", "--cores", "2", "--directory", str(work), "--configfile", str(TINY),
                    str(work / "config.yaml"))
    (work / "console.txt").write_text(res.stdout + res.stderr)
    return work / "results" / "screens"


@pytest.mark.slow
def test_a_screen_end_to_end(screen_run):
    import scanpy as sc

    demo = screen_run / "demo"
    for method in ("vae", "ivae", "svae_plus"):
        adata = sc.read_h5ad(demo / method / "latents.h5ad")
        assert adata.obsm[f"X_{method}"].shape == (adata.n_obs, 3) and adata.n_obs == 6 * 50 + 50 + 100
        assert adata.uns["sparseshift"]["method"] == method and "condition" in adata.obs
        sc.pp.neighbors(adata, use_rep=f"X_{method}", n_neighbors=5)  # scanpy reads it as it is
        assert adata.obsp["connectivities"].shape == (adata.n_obs, adata.n_obs)
    targets = pd.read_csv(demo / "svae_plus" / "targets.tsv", sep="\t")
    # one row per single perturbation: the combination P00_P01 is their sum, not a row of its own
    assert len(targets) == 7 * 3 and set(targets["perturbation"]) == {"control", *[f"P0{i}" for i in range(6)]}
    assert targets.loc[targets.perturbation == "P05", "split"].eq("heldout").all()
    assert pd.read_csv(demo / "vae" / "targets.tsv", sep="\t").empty
    factors = pd.read_csv(demo / "svae_plus" / "factors.tsv", sep="\t")
    assert factors["latent"].tolist() == [0, 1, 2]
    summary = pd.read_csv(screen_run / "summary.tsv", sep="\t")
    assert sorted(summary["method"]) == ["ivae", "svae_plus", "vae"] and summary["inll"].notna().all()
    for figure in ("targets", "latent_means"):
        assert (demo / "figures" / f"{figure}.png").stat().st_size > 0
    assert (screen_run / "figures" / "inll.png").exists()
    with h5py.File(demo / "data.h5ad") as f:
        assert f["X"].attrs["encoding-type"] == "csr_matrix"
    gsea = demo / "seed0" / "svae_plus" / "p3_alpha10" / "enrichment" / "gsea.tsv"
    assert gsea.exists()
