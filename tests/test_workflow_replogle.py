"""The Replogle branch of the Snakefile end to end, on a tiny generated dataset.

A Replogle-schema h5ad (anndata 0.7 legacy layout) and a Table S3-shaped workbook are
generated, served by an HTTP server on 127.0.0.1 and downloaded by the ``download`` rule
(size and md5 checked); then preprocessing, two folds (a pathway cluster and the effect
fold), training, the transfer protocol and the summary.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading

import anndata
import pandas as pd
import pytest
import torch
import yaml

from fixtures.replogle_synthetic import synthetic_genes, write_legacy_h5ad, write_table_s3
from test_workflow import TINY, snakemake

STRONG = ["STRONG1", "STRONG2"]
PERTURBATIONS = [f"G{i:05d}" for i in range(20, 28)] + STRONG
CLUSTERS = {
    "Exosome and mRNA turnover": ["G00020", "G00021"],
    "Mediator complex": ["G00022", "G00023", "G00024"],
    "Strong responders": [*STRONG, "G00025"],
    "Other": ["G00026", "G00027"],
}
PROGRAMS = {"program one": ["TBCE", *[f"G{i:05d}" for i in range(4, 30)]], "program two": ["HSPA14"]}
pytestmark = pytest.mark.filterwarnings("ignore::anndata.OldFormatWarning")


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Generated inputs served over HTTP on 127.0.0.1."""
    root = tmp_path_factory.mktemp("served")
    write_legacy_h5ad(root / "raw.h5ad", 1200, synthetic_genes(30), PERTURBATIONS, controls=60, seed=1,
                      strong=STRONG, chunk_rows=128)
    write_table_s3(root / "table.xlsx", CLUSTERS, PROGRAMS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def replogle_run(server, tmp_path_factory):
    root, url = server
    work = tmp_path_factory.mktemp("replogle_run")
    config = yaml.safe_load(TINY.read_text())
    config["methods"] = ["vae", "svae_plus"]
    config["replogle"] = {
        "enabled": True,
        "data_dir": str(work / "downloads"),
        "downloads": {
            "gwps": {"file": "gwps.h5ad", "url": f"{url}/raw.h5ad",
                     "size": (root / "raw.h5ad").stat().st_size, "md5": md5(root / "raw.h5ad")},
            "table_s3": {"file": "table_s3.xlsx", "url": f"{url}/table.xlsx", "md5": md5(root / "table.xlsx")},
        },
        "max_controls": 50,
        "folds": [{"name": "exosome", "cluster": "exosome"}, {"name": "effect", "effect": True}],
        "n_effect": 2,
        "n_pcs": 5,
        "n_latent": 3,
        "hyperparameters": {"alpha": [10]},  # the arm's own grid: one setting, no selection
        "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 64},
        "transfer": {"retrain_epochs": 2, "finetune_epochs": 2, "particles": 20},
    }
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake("replogle", "--cores", "2", "--directory", str(work), "--configfile", str(cfg))
    return work


def test_downloads_are_verified_copies(server, replogle_run):
    root, _ = server
    downloads = replogle_run / "downloads"
    assert md5(downloads / "gwps.h5ad") == md5(root / "raw.h5ad")
    assert md5(downloads / "table_s3.xlsx") == md5(root / "table.xlsx")
    assert not list(downloads.glob("*.part"))


def test_processed_data_and_folds(replogle_run):
    results = replogle_run / "results" / "replogle"
    processed = anndata.read_h5ad(results / "processed.h5ad")
    members = {p for m in CLUSTERS.values() for p in m}
    assert set(processed.obs["perturbation"].astype(str)) == members | {"non-targeting"}
    assert (processed.obs["perturbation"] == "non-targeting").sum() == 50
    assert set(processed.var["gene_name"]) == {g for m in PROGRAMS.values() for g in m}
    exosome = anndata.read_h5ad(results / "exosome" / "data.h5ad")
    held = exosome.obs.loc[exosome.obs["split"] == "heldout", "perturbation"].astype(str)
    assert set(held) == {"G00020", "G00021"}
    assert "non-targeting" not in set(exosome.obs["perturbation"].astype(str))
    effect = anndata.read_h5ad(results / "effect" / "data.h5ad")
    assert list(effect.uns["heldout_perturbations"]) == STRONG  # the shifted ones


def test_summary_has_every_fold_method_and_the_inll(replogle_run):
    results = replogle_run / "results" / "replogle"
    summary = pd.read_csv(results / "summary.tsv", sep="\t")
    assert list(summary.columns[:3]) == ["fold", "method", "seed"]
    assert sorted(zip(summary["fold"], summary["method"])) == [
        ("effect", "svae_plus"), ("effect", "vae"), ("exosome", "svae_plus"), ("exosome", "vae")]
    for col in ("elbo_val", "elbo_heldout_before", "inll"):
        assert summary[col].notna().all(), col
    assert (summary["inll"] > 0).all() and summary["mcc_pearson"].isna().all()  # no ground truth
    table = pd.read_csv(results / "table1.tsv", sep="\t")
    assert set(table["fold"]) == {"exosome", "effect"} and table["I-NLL"].notna().all()
    assert (results / "figures" / "inll.png").stat().st_size > 1000
    run = results / "exosome" / "seed0" / "svae_plus" / "p3_alpha10"
    state = torch.load(run / "transfer" / "finetuned.pt", weights_only=True)
    n_perturbations = len({p for m in CLUSTERS.values() for p in m})
    assert state["prior.mu"].shape == (n_perturbations, 3)
    per_pert = pd.read_csv(run / "transfer" / "heldout_perturbations.tsv", sep="\t")
    assert set(per_pert["perturbation"]) == {"G00020", "G00021"}


def test_a_local_copy_is_used_without_download(server, tmp_path):
    root, _ = server
    config = yaml.safe_load(TINY.read_text())
    config["replogle"] = {"enabled": True, "h5ad": str(root / "raw.h5ad"), "table_s3": str(root / "table.xlsx"),
                          "data_dir": str(tmp_path / "downloads"), "folds": [{"name": "exosome", "cluster": "exosome"}]}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = snakemake("replogle", "-n", "--quiet", "rules", "--directory", str(tmp_path),
                    "--configfile", str(cfg)).stdout
    assert "download" not in out and "preprocess_replogle" in out
    config["replogle"]["h5ad"] = str(tmp_path / "absent.h5ad")
    cfg.write_text(yaml.safe_dump(config))
    res = snakemake("replogle", "-n", "--directory", str(tmp_path), "--configfile", str(cfg), check=False)
    assert res.returncode != 0 and "replogle.h5ad" in res.stdout + res.stderr


def test_a_corrupt_input_leaves_the_processed_data_of_a_finished_run(replogle_run, tmp_path):
    """A finished run rerun with a truncated h5ad: the input check fails, once, before
    Snakemake would clear processed.h5ad for preprocessing, which is left as it was."""
    work = tmp_path / "run"
    shutil.copytree(replogle_run, work, symlinks=True)
    cfg = work / "config.yaml"
    cfg.write_text(cfg.read_text().replace(str(replogle_run), str(work)))
    processed = work / "results" / "replogle" / "processed.h5ad"
    before = md5(processed), processed.stat().st_mtime_ns
    raw = work / "downloads" / "gwps.h5ad"
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    res = snakemake("replogle", "--cores", "2", "--directory", str(work), "--configfile", str(cfg), check=False)
    console = res.stdout + res.stderr
    assert res.returncode != 0 and "Error in rule check_replogle_inputs:" in console
    assert "Trying to restart" not in console and "rule preprocess_replogle:" not in console
    assert console.count("expected a readable .h5ad file") == 1
    log = (work / "results" / "logs" / "replogle" / "check_inputs.log").read_text()
    assert "gwps.h5ad: field '(file)' — expected a readable .h5ad file" in log.splitlines()[-1]
    assert (md5(processed), processed.stat().st_mtime_ns) == before


def test_a_misnamed_fold_stops_the_workflow_before_any_job(server, tmp_path):
    root, _ = server
    config = yaml.safe_load(TINY.read_text())
    config["replogle"] = {"enabled": True, "h5ad": str(root / "raw.h5ad"), "table_s3": str(root / "table.xlsx"),
                          "folds": [{"name": "exosome", "cluster": "exosome"}, {"name": "bad", "cluster": "Mediatr"}]}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    res = snakemake("replogle", "--cores", "1", "--directory", str(tmp_path), "--configfile", str(cfg), check=False)
    console = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config key replogle.folds.1.cluster" in console and "closest: ['Mediator complex'" in console
    assert "Building DAG" not in console and not (tmp_path / "results").exists()
