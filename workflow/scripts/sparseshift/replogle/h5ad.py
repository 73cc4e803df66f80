"""The raw Replogle h5ad, read without loading it, and the cheap checks of the inputs.

The input is 66 GB of dense float32 counts, read through the screens' block reader
(:mod:`sparseshift.screens.reader`: obs one column at a time, including the anndata 0.7 legacy
layout, and ``X`` in contiguous row blocks, dense or CSR); this module adds what Replogle's
schema requires.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pandas as pd

from ..io import InputError
from ..screens.reader import LazyObs, check_counts, matrix_reader, matrix_shape, open_h5ad
from .table_s3 import find_cluster, read_table_s3

log = logging.getLogger(__name__)

REQUIRED_OBS = ("gene", "gene_id", "gem_group", "UMI_count", "mitopercent")


def _check_frames(path, obs: LazyObs, var: pd.DataFrame) -> None:
    """obs and var checked for the fields preprocessing needs."""
    for col in REQUIRED_OBS:
        if col not in obs.columns:
            raise InputError(path, f"obs/{col}", "a column of per-cell values", f"columns {obs.columns}")
    if "gene_name" not in var.columns:
        raise InputError(path, "var/gene_name", "gene symbols per column of X",
                         f"columns {list(var.columns)}")


@contextlib.contextmanager
def open_input(path):
    """An input h5ad open for reading: (obs, var, X, its format, its block reader), checked
    for the fields and the shape preprocessing needs."""
    with open_h5ad(path) as (f, obs, var):
        _check_frames(path, obs, var)
        x = f["X"]
        if matrix_shape(path, x) != (obs.n, len(var)):
            raise InputError(path, "X", f"shape ({obs.n}, {len(var)}) matching obs and var", str(matrix_shape(path, x)))
        yield obs, var, x, *matrix_reader(path, x)


def check_inputs(h5ad_path, table_s3_path, folds: list[dict]) -> dict:
    """The cheap checks of :func:`preprocess`'s inputs, made before it runs (rule
    ``check_replogle_inputs``) so that a bad input stops the workflow before Snakemake clears
    the outputs of an earlier run: Table S3's clusters and programs and every fold's cluster;
    the h5ad's obs and var fields, the shape of X, and its first and last rows readable
    counts (a truncated file fails there). Returns what was checked."""
    clusters, _ = read_table_s3(table_s3_path)
    for fold in folds:
        if not fold.get("effect"):
            find_cluster(clusters, fold)
    with open_input(h5ad_path) as (obs, var, _, fmt, read):
        for row in np.unique([0, obs.n - 1]) if obs.n else []:
            block = read(int(row), int(row) + 1, 1)
            block = block.toarray() if fmt == "csr" else np.asarray(block)
            cols = np.arange(len(var))
            check_counts(h5ad_path, block, np.array([row]), cols, obs.index(np.array([row])), var.index.to_numpy())
    report = {"h5ad": str(h5ad_path), "table_s3": str(table_s3_path), "n_cells": obs.n, "n_genes": len(var),
              "x_format": fmt, "n_clusters": len(clusters), "folds": [fold["name"] for fold in folds]}
    log.info("inputs checked: %s", report)
    return report

