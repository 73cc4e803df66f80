"""Replogle 2022 preprocessing and hold-out folds (sparseshift.replogle), on generated files
in the real file's anndata-0.7 legacy layout (tests/fixtures/replogle_synthetic.py)."""

from __future__ import annotations

import logging
import shutil

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from sparseshift.io import InputError, write_h5ad
from sparseshift.replogle import preprocessing
from sparseshift.replogle.folds import effect_scores, fold_perturbations, make_fold
from sparseshift.replogle.h5ad import check_inputs
from sparseshift.replogle.preprocessing import preprocess
from sparseshift.replogle.table_s3 import read_table_s3
from sparseshift.data import perturbation_labels, training_cells
from sparseshift.io import read_dataset

from fixtures.replogle_synthetic import synthetic_genes, write_legacy_h5ad, write_table_s3

GENES = synthetic_genes(40)  # TBCE and HSPA14 each on two Ensembl ids, then G00004 … G00039
STRONG = ["STRONG1", "STRONG2", "STRONG3"]
PERTURBATIONS = [
    "G00020", "G00021", "G00022", "G00023", "G00024", "G00025", "G00030", "G00031",
    *STRONG, "G00035", "G00036", "NOTCLUSTERED",  # the last three are in no cluster
]
CLUSTERS = {
    "Exosome complex": ["G00020", "G00021", "G00022"],
    "Mediator complex": ["G00023", "G00024", "ABSENT1"],
    "Strong responders": [*STRONG, "G00025"],
    "Ghost cluster": ["ABSENT2", "ABSENT3"],
    "Misc transcription": ["G00030", "G00031"],  # write_table_s3 adds G00020 here (cross-listed)
}
PROGRAMS = {
    "program one": ["TBCE", *[f"G{i:05d}" for i in range(4, 16)]],
    "program two": ["HSPA14", *[f"G{i:05d}" for i in range(12, 30)], "MISSINGGENE"],
}
N_CELLS, N_CONTROLS = 600, 80
# anndata warns on every element of a legacy (0.7) file when the tests read the source
pytestmark = pytest.mark.filterwarnings("ignore::anndata.OldFormatWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("replogle")
    h5ad, xlsx = d / "raw.h5ad", d / "table_s3.xlsx"
    info = write_legacy_h5ad(h5ad, N_CELLS, GENES, PERTURBATIONS, controls=N_CONTROLS, seed=7,
                             strong=STRONG, chunk_rows=64)
    expected_clusters = write_table_s3(xlsx, CLUSTERS, PROGRAMS)
    return {"dir": d, "h5ad": h5ad, "xlsx": xlsx, "info": info, "clusters": expected_clusters}


@pytest.fixture(scope="module")
def processed(files):
    out = files["dir"] / "processed.h5ad"
    report = preprocess(files["h5ad"], files["xlsx"], out, chunk_rows=64)
    return report, ad.read_h5ad(out)


@pytest.fixture(scope="module")
def clusters(files):
    return read_table_s3(files["xlsx"])[0]


def expected_selection(path, keep_controls=True):
    """Rows and columns to keep, worked out from the source read in full by anndata."""
    src = ad.read_h5ad(path)
    members = {p for m in CLUSTERS.values() for p in m}
    program = {g for m in PROGRAMS.values() for g in m}
    gene = src.obs["gene"].astype(str).to_numpy()
    rows = np.isin(gene, list(members)) | ((gene == "non-targeting") & keep_controls)
    cols = src.var["gene_name"].isin(program).to_numpy()
    return src, np.flatnonzero(rows), np.flatnonzero(cols)


# ------------------------------------------------------------------ the generated file


def test_legacy_layout_is_read_by_anndata(files):
    with h5py.File(files["h5ad"], "r") as f:
        assert "encoding-type" not in f.attrs  # anndata 0.7 wrote no root attributes
        assert isinstance(f["X"], h5py.Dataset) and f["X"].dtype == np.float32
        assert f["X"].chunks is None and f["X"].compression is None
        assert f["obs"].attrs["_index"] == "cell_barcode"
        assert f["obs"].attrs["encoding-type"] == "dataframe"
        ref = f["obs/gene"].attrs["categories"]
        assert isinstance(ref, h5py.Reference) and f[ref].name == "/obs/__categories/gene"
        assert f["obs/gene"].dtype.kind == "i" and "codes" not in f["obs/gene"].attrs
    a = ad.read_h5ad(files["h5ad"], backed="r")
    try:
        assert a.shape == (N_CELLS, len(GENES))
        assert a.obs.index.name == "cell_barcode" and a.obs.index.is_unique
        for col in ("gene", "gem_group", "sgID_AB"):
            assert isinstance(a.obs[col].dtype, pd.CategoricalDtype), col
        np.testing.assert_array_equal(a.obs["gene"].astype(str).to_numpy(),
                                      files["info"]["perturbation_of_cell"])
        assert (a.obs["gene"] == "non-targeting").sum() == N_CONTROLS
        assert set(a.obs["gem_group"].cat.categories) <= {1, 2, 3, 4}
        assert a.obs["gene_id"].dtype == object and a.obs["UMI_count"].dtype == np.float64
        assert list(a.var.index[:4]) == [g[0] for g in GENES[:4]]
        assert list(a.var["gene_name"][:4]) == ["TBCE", "TBCE", "HSPA14", "HSPA14"]
        x = np.asarray(a.X[:50])
        assert (x >= 0).all() and (x == np.round(x)).all() and x.sum() > 0
        np.testing.assert_allclose(a.obs["UMI_count"][:50], x.sum(axis=1))
    finally:
        a.file.close()


# ------------------------------------------------------------------ Table S3


def test_table_s3_found_below_title_rows_with_extra_sheet(files):
    clusters, genes = read_table_s3(files["xlsx"])
    assert list(clusters.columns) == ["description", "members"]
    assert list(clusters["description"]) == list(CLUSTERS)
    assert dict(zip(clusters["description"], clusters["members"])) == files["clusters"]
    assert clusters["members"][0] == ["G00020", "G00021", "G00022"]  # duplicate " G00020 " dropped
    assert clusters["members"].iloc[-1] == ["G00030", "G00031", "G00020"]  # cross-listed
    assert genes == sorted({g for m in PROGRAMS.values() for g in m})
    assert clusters.attrs["path"] == str(files["xlsx"])


def test_table_s3_missing_sheet_names_file(tmp_path):
    path = tmp_path / "s3.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as w:
        pd.DataFrame({"notes": ["x"]}).to_excel(w, sheet_name="README", index=False)
        programs = pd.DataFrame({"manual_annotation": ["p"], "members": ["A,B"]})
        programs.to_excel(w, sheet_name="programs", index=False)
    with pytest.raises(InputError, match="best_description") as err:
        read_table_s3(path)
    assert str(path) in str(err.value) and "programs" in str(err.value)


def test_table_s3_unreadable_file(tmp_path):
    path = tmp_path / "s3.xlsx"
    path.write_text("not a workbook")
    with pytest.raises(InputError, match="xlsx"):
        read_table_s3(path)


# ------------------------------------------------------------------ preprocessing


def test_preprocess_selects_expected_cells_and_genes(files, processed):
    report, out = processed
    src, rows, cols = expected_selection(files["h5ad"])
    assert out.shape == (len(rows), len(cols))
    np.testing.assert_array_equal(out.obs_names, src.obs_names[rows])
    np.testing.assert_array_equal(out.var_names, src.var_names[cols])
    assert out.X.dtype == np.float32 and isinstance(out.X, np.ndarray)
    np.testing.assert_array_equal(out.X, np.asarray(src.X)[np.ix_(rows, cols)])
    # the duplicated symbols keep both Ensembl ids
    assert list(out.var_names[:4]) == [g[0] for g in GENES[:4]]
    assert list(out.var["gene_name"][:4]) == ["TBCE", "TBCE", "HSPA14", "HSPA14"]
    assert report["duplicated_symbols"] == ["HSPA14", "TBCE"]
    assert report["n_cells_out"] == len(rows) and report["n_genes_out"] == len(cols) == 4 + 26
    assert report["n_cells_in"] == N_CELLS and report["n_controls_out"] == N_CONTROLS
    assert report["chunk_rows"] == 64  # several blocks were read
    assert out.uns["preprocess"]["n_cells_out"] == len(rows)


def test_preprocess_obs_columns_and_clusters(files, processed):
    _, out = processed
    src, rows, _ = expected_selection(files["h5ad"])
    assert out.obs.index.name == "cell_barcode"
    for col in ("perturbation", "cluster", "is_control", "gene_id", "gem_group", "UMI_count", "mitopercent"):
        assert col in out.obs, col
    assert "sgID_AB" not in out.obs
    src_obs = src.obs.iloc[rows]
    np.testing.assert_array_equal(out.obs["perturbation"].astype(str), src_obs["gene"].astype(str))
    np.testing.assert_array_equal(out.obs["UMI_count"], src.obs["UMI_count"].to_numpy()[rows])
    np.testing.assert_array_equal(out.obs["gene_id"].astype(str), src_obs["gene_id"].astype(str))
    np.testing.assert_array_equal(out.obs["gem_group"].astype(int), src_obs["gem_group"].astype(int))
    np.testing.assert_array_equal(out.obs["mitopercent"], src_obs["mitopercent"])
    cluster = dict(zip(out.obs["perturbation"].astype(str), out.obs["cluster"].astype(str)))
    assert cluster["G00020"] == "Exosome complex"  # listed in two clusters: the first wins
    assert cluster["G00031"] == "Misc transcription"
    assert cluster["STRONG2"] == "Strong responders"
    assert cluster["non-targeting"] == "control"
    assert "NOTCLUSTERED" not in cluster and "G00035" not in cluster
    np.testing.assert_array_equal(out.obs["is_control"], out.obs["perturbation"] == "non-targeting")
    assert out.obs["is_control"].dtype == bool


def test_missing_perturbations_and_genes_warned_and_reported(files, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sparseshift.replogle"):
        report = preprocess(files["h5ad"], files["xlsx"], tmp_path / "o.h5ad", chunk_rows=1000)
    assert report["missing_perturbations"] == ["ABSENT1", "ABSENT2", "ABSENT3"]
    assert report["n_missing_perturbations"] == 3
    assert report["missing_genes"] == ["MISSINGGENE"]
    text = caplog.text
    assert "3 perturbations" in text and "ABSENT2" in text
    assert "1 program genes" in text and "MISSINGGENE" in text
    stored = ad.read_h5ad(tmp_path / "o.h5ad").uns["preprocess"]
    assert list(stored["missing_perturbations"]) == report["missing_perturbations"]


def test_controls_subsampled_or_dropped(files, processed, tmp_path):
    _, full = processed
    all_controls = set(full.obs_names[full.obs["is_control"]])
    r1 = preprocess(files["h5ad"], files["xlsx"], tmp_path / "a.h5ad", max_controls=10, seed=1)
    preprocess(files["h5ad"], files["xlsx"], tmp_path / "b.h5ad", max_controls=10, seed=1)
    r2 = preprocess(files["h5ad"], files["xlsx"], tmp_path / "c.h5ad", max_controls=10, seed=2)
    a, b, c = (ad.read_h5ad(tmp_path / f"{k}.h5ad") for k in "abc")
    assert r1["n_controls_out"] == 10 and r1["n_controls_in"] == N_CONTROLS
    ca, cb, cc = (set(x.obs_names[x.obs["is_control"]]) for x in (a, b, c))
    assert len(ca) == 10 and ca <= all_controls and ca == cb and ca != cc
    assert a.n_obs == full.n_obs - N_CONTROLS + 10
    assert list(a.obs_names) == sorted(a.obs_names, key=list(full.obs_names).index)  # file order kept
    preprocess(files["h5ad"], files["xlsx"], tmp_path / "d.h5ad", keep_controls=False)
    d = ad.read_h5ad(tmp_path / "d.h5ad")
    assert not d.obs["is_control"].any() and d.n_obs == full.n_obs - N_CONTROLS
    assert r2["seed"] == 2


def test_block_size_capped_by_columns(files, processed, tmp_path, monkeypatch):
    monkeypatch.setattr(preprocessing, "BLOCK_ELEMENTS", len(GENES) * 37)
    report = preprocess(files["h5ad"], files["xlsx"], tmp_path / "o.h5ad", chunk_rows=16384)
    assert report["chunk_rows"] == 37
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "o.h5ad").X, processed[1].X)


def test_csr_input_gives_same_output(files, processed, tmp_path):
    src = tmp_path / "csr.h5ad"
    write_legacy_h5ad(src, N_CELLS, GENES, PERTURBATIONS, controls=N_CONTROLS, seed=7, strong=STRONG,
                      chunk_rows=64, x_format="csr")
    report = preprocess(src, files["xlsx"], tmp_path / "o.h5ad", chunk_rows=50)
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert report["x_format"] == "csr"
    np.testing.assert_array_equal(out.X, processed[1].X)
    np.testing.assert_array_equal(out.obs_names, processed[1].obs_names)


def test_current_anndata_layout_gives_same_output(files, processed, tmp_path):
    """The same data written by the installed anndata (categoricals as groups, string arrays)."""
    src = ad.read_h5ad(files["h5ad"])
    src.write_h5ad(tmp_path / "modern.h5ad")
    with h5py.File(tmp_path / "modern.h5ad", "r") as f:
        assert f["obs/gene"].attrs["encoding-type"] == "categorical"
    preprocess(tmp_path / "modern.h5ad", files["xlsx"], tmp_path / "o.h5ad", chunk_rows=64)
    out, ref = ad.read_h5ad(tmp_path / "o.h5ad"), processed[1]
    np.testing.assert_array_equal(out.X, ref.X)
    pd.testing.assert_frame_equal(out.obs, ref.obs)
    pd.testing.assert_frame_equal(out.var, ref.var)


def _corrupt_copy(files, tmp_path, value):
    """A copy of the input with ``value`` in X at a selected cell and gene; returns (path, barcode)."""
    src, rows, cols = expected_selection(files["h5ad"])
    path = tmp_path / "bad.h5ad"
    shutil.copy(files["h5ad"], path)
    row, col = int(rows[len(rows) // 2]), int(cols[3])
    with h5py.File(path, "r+") as f:
        f["X"][row, col] = value
    return path, src.obs_names[row]


@pytest.mark.parametrize("value", [-1.0, 2.5, np.nan, np.inf])
def test_bad_counts_raise_and_write_nothing(files, tmp_path, value):
    path, barcode = _corrupt_copy(files, tmp_path, value)
    out = tmp_path / "out" / "o.h5ad"
    with pytest.raises(InputError) as err:
        preprocess(path, files["xlsx"], out, chunk_rows=64)
    msg = str(err.value)
    assert str(path) in msg and "'X'" in msg and barcode in msg
    assert not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def _drop_obs_column(path, col):
    with h5py.File(path, "r+") as f:
        del f[f"obs/{col}"]
        order = [c for c in f["obs"].attrs["column-order"] if c != col]
        f["obs"].attrs["column-order"] = np.array(order, dtype=object)


@pytest.mark.parametrize("col", ["mitopercent", "gene"])
def test_missing_obs_column_raises(files, tmp_path, col):
    path = tmp_path / "nocol.h5ad"
    shutil.copy(files["h5ad"], path)
    _drop_obs_column(path, col)
    out = tmp_path / "o.h5ad"
    with pytest.raises(InputError, match=f"obs/{col}") as err:
        preprocess(path, files["xlsx"], out)
    assert str(path) in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".o.h5ad*"))


def test_missing_var_gene_name_raises(files, tmp_path):
    path = tmp_path / "nogenename.h5ad"
    shutil.copy(files["h5ad"], path)
    with h5py.File(path, "r+") as f:
        del f["var/gene_name"]
        f["var"].attrs["column-order"] = np.array(["chr", "mean"], dtype=object)
    with pytest.raises(InputError, match="var/gene_name"):
        preprocess(path, files["xlsx"], tmp_path / "o.h5ad")


def test_check_inputs_passes_good_inputs(files):
    folds = [{"name": "exo", "cluster": "exosome"}, {"name": "effect", "effect": True}]
    report = check_inputs(files["h5ad"], files["xlsx"], folds)
    assert report["n_cells"] == N_CELLS and report["folds"] == ["exo", "effect"]


def test_check_inputs_refuses_a_truncated_h5ad(files, tmp_path):
    path = tmp_path / "truncated.h5ad"
    path.write_bytes(files["h5ad"].read_bytes()[: files["h5ad"].stat().st_size // 2])
    with pytest.raises(InputError, match=r"truncated\.h5ad: field '\(file\)' — expected a readable \.h5ad file"):
        check_inputs(path, files["xlsx"], [])


def test_check_inputs_reads_the_last_row(files, tmp_path):
    """A bad count in the last row (which a truncated or corrupt end of X would give) is found."""
    path = tmp_path / "badend.h5ad"
    shutil.copy(files["h5ad"], path)
    with h5py.File(path, "r+") as f:
        f["X"][-1, 0] = np.nan
    with pytest.raises(InputError, match=f"row {N_CELLS - 1} "):
        check_inputs(path, files["xlsx"], [])


def test_check_inputs_refuses_a_fold_without_its_cluster(files):
    with pytest.raises(InputError, match=r"closest: \['Exosome complex'"):
        check_inputs(files["h5ad"], files["xlsx"], [{"name": "exo", "cluster": "Exosome complx"}])


# ------------------------------------------------------------------ folds


def test_pathway_fold_and_split(processed, clusters):
    _, data = processed
    held = fold_perturbations(data, {"name": "exosome", "description": "  exosome   COMPLEX "}, clusters)
    assert held == ["G00020", "G00021", "G00022"]
    fold = make_fold(data, held, "exosome")
    labels, names = perturbation_labels(fold)
    train = training_cells(fold)
    pert = fold.obs["perturbation"].astype(str).to_numpy()
    assert not (pert == "non-targeting").any() and fold.n_obs == data.n_obs - N_CONTROLS
    np.testing.assert_array_equal(~train, np.isin(pert, held))
    assert (fold.obs["split"].astype(str).to_numpy()[~train] == "heldout").all()
    expected_train = sorted(set(pert) - set(held))
    assert names == expected_train + held
    assert np.array_equal(np.asarray(names)[labels], pert)
    assert fold.uns["fold"] == "exosome" and list(fold.uns["heldout_perturbations"]) == held
    np.testing.assert_array_equal(fold.X, data[~data.obs["is_control"].to_numpy()].X)  # counts untouched


def test_fold_written_and_read_back_by_run(processed, clusters, tmp_path):
    _, data = processed
    fold = make_fold(data, ["G00023", "G00024"], "mediator", keep_controls_in_training=True)
    write_h5ad(fold, tmp_path / "fold.h5ad")
    back = read_dataset(tmp_path / "fold.h5ad")
    _, names = perturbation_labels(back, tmp_path / "fold.h5ad")
    assert "non-targeting" in names[:-2] and names[-2:] == ["G00023", "G00024"]
    assert back.n_obs == data.n_obs
    assert set(back.obs["perturbation"][training_cells(back)].astype(str)) == set(names[:-2])


def test_fold_drops_absent_perturbations_with_warning(processed, clusters, caplog):
    _, data = processed
    with caplog.at_level(logging.WARNING, logger="sparseshift.replogle"):
        held = fold_perturbations(data, {"name": "mediator", "description": "Mediator complex"}, clusters)
    assert held == ["G00023", "G00024"] and "ABSENT1" in caplog.text


def test_fold_by_cluster_word(processed, clusters):
    _, data = processed
    assert fold_perturbations(data, {"name": "exo", "cluster": "EXOSOME", "effect": False}, clusters) == [
        "G00020", "G00021", "G00022"]
    held = fold_perturbations(data, {"name": "m", "cluster": "mediator complex"}, clusters)
    assert held == ["G00023", "G00024"]
    with pytest.raises(InputError, match="exactly one") as err:  # in two descriptions
        fold_perturbations(data, {"name": "c", "cluster": "complex"}, clusters)
    assert "Exosome complex" in str(err.value) and "Mediator complex" in str(err.value)
    with pytest.raises(InputError, match="closest"):  # not a whole word of any description
        fold_perturbations(data, {"name": "c", "cluster": "exo"}, clusters)
    with pytest.raises(InputError, match="closest"):  # description must match in full
        fold_perturbations(data, {"name": "c", "description": "exosome"}, clusters)


def test_fold_with_no_perturbation_present_raises(processed, clusters):
    with pytest.raises(InputError, match="ghost"):
        fold_perturbations(processed[1], {"name": "ghost", "description": "Ghost cluster"}, clusters)


def test_unknown_description_lists_close_matches(processed, clusters):
    with pytest.raises(InputError, match="Exosome complex") as err:
        fold_perturbations(processed[1], {"name": "exo", "description": "Exosome complx"}, clusters)
    assert "closest" in str(err.value) and "table_s3.xlsx" in str(err.value)


def test_effect_fold_finds_strong_perturbations(processed, clusters):
    _, data = processed
    held = fold_perturbations(data, {"name": "effect", "effect": True}, clusters, n_effect=3, n_pcs=10)
    assert sorted(held) == STRONG
    scores = effect_scores(data, n_pcs=10)
    assert list(scores.index[:3]) == held and scores.is_monotonic_decreasing
    assert scores[STRONG].min() > 1.5 * scores.drop(STRONG).max()
    fold = make_fold(data, held, "effect")
    assert set(fold.obs["perturbation"][~training_cells(fold)].astype(str)) == set(STRONG)


def test_effect_mmd_is_mean_embedding_distance(processed):
    """Linear-kernel MMD² computed from the kernel matrices equals the score."""
    from sklearn.decomposition import PCA

    _, data = processed
    x = np.asarray(data.X, dtype=np.float64)
    y = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    emb = PCA(n_components=5, random_state=0).fit_transform(y.astype(np.float32))
    pert = data.obs["perturbation"].astype(str).to_numpy()
    a, b = emb[pert == "STRONG1"][:7], emb[pert == "non-targeting"][:7]
    mmd = (a @ a.T).mean() + (b @ b.T).mean() - 2 * (a @ b.T).mean()
    scores = effect_scores(data, n_pcs=5, max_cells=7)
    assert scores["STRONG1"] == pytest.approx(mmd, rel=1e-4)


def test_effect_fold_without_controls_raises(processed, clusters):
    _, data = processed
    no_ctrl = data[~data.obs["is_control"].to_numpy()].copy()
    with pytest.raises(InputError, match="non-targeting"):
        fold_perturbations(no_ctrl, {"name": "effect", "effect": True}, clusters, n_effect=3)


def test_make_fold_rejects_absent_heldout(processed):
    with pytest.raises(InputError, match="ABSENT1"):
        make_fold(processed[1], ["G00023", "ABSENT1"], "mediator")
