"""Replogle preprocessing: Table S3's perturbations (cells) and program genes (columns)
selected from the raw h5ad.

The input is 66 GB of dense float32 counts, so :func:`preprocess` never loads it:
obs and var are read on their own (:mod:`.h5ad`) and ``X`` is streamed with h5py in
contiguous row blocks of at most ~512 MB, rows and columns being selected in numpy
per block and copied into a preallocated output. Peak memory is about the output
plus one block plus obs.

Output of :func:`preprocess` (an ``.h5ad``, written atomically):

* ``X``: dense float32, integer-valued counts, cells in input order;
* ``obs`` (index: cell barcodes): ``perturbation`` (targeted gene symbol,
  ``non-targeting`` for controls), ``cluster`` (Table S3 ``best_description`` of the
  perturbation's first cluster; ``control`` for controls), ``is_control``,
  ``gene_id``, ``gem_group``, ``UMI_count``, ``mitopercent`` (copied from the input);
* ``var`` (index: Ensembl ids): ``gene_name`` (a symbol may appear on several rows);
* ``uns["preprocess"]``: the report returned by :func:`preprocess`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import CONSOLE, InputError, write_h5ad
from . import CONTROL, CONTROL_CLUSTER, MAX_NAMES
from .h5ad import REQUIRED_OBS, check_counts, open_input
from .table_s3 import cluster_of_perturbation, read_table_s3

log = logging.getLogger(__name__)

BLOCK_ELEMENTS = 2**27  # one block of X holds at most this many values (512 MB of float32)


def _warn_missing(path, what: str, names: list[str]) -> None:
    if names:
        shown = ", ".join(names[:MAX_NAMES]) + (", …" if len(names) > MAX_NAMES else "")
        log.warning("%s: %d %s named by Table S3 are absent from the data: %s", path, len(names), what, shown)



def select_cells(
    genes, clusters: pd.DataFrame, *, keep_controls: bool = True,
    max_controls: int | None = None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices to keep and the boolean control mask of ``genes`` (``obs["gene"]``)."""
    genes = pd.Series(genes, copy=False)
    member = genes.isin(list(cluster_of_perturbation(clusters))).to_numpy()
    control = (genes == CONTROL).to_numpy()
    keep = member & ~control
    if keep_controls:
        ctrl = np.flatnonzero(control)
        if max_controls is not None and len(ctrl) > max_controls:
            ctrl = np.random.default_rng(seed).choice(ctrl, size=int(max_controls), replace=False)
        keep[ctrl] = True
    return np.flatnonzero(keep), control


def preprocess(
    h5ad_path,
    table_s3_path,
    out_path,
    *,
    chunk_rows: int = 16384,
    keep_controls: bool = True,
    max_controls: int | None = None,
    seed: int = 0,
) -> dict:
    """Select Table S3's perturbations (cells) and program genes (columns) of a Replogle h5ad.

    ``X`` is read in contiguous blocks of ``chunk_rows`` rows, capped so that a block
    holds at most 2**27 values (512 MB of float32); blocks without a selected cell are
    skipped and each block is trimmed to the span of its selected cells. The selected
    values are checked to be finite non-negative integers. Controls (``non-targeting``)
    are kept if ``keep_controls``, at most ``max_controls`` of them (a seeded random
    subset, in file order). Returns the report also stored in ``uns["preprocess"]``.
    Nothing is written at ``out_path`` unless the whole output is.
    """
    tic = time.perf_counter()
    if max_controls is not None and max_controls < 0:
        raise ValueError("max_controls must be None or >= 0")
    clusters, program_genes = read_table_s3(table_s3_path)
    cluster_of = cluster_of_perturbation(clusters)
    with open_input(h5ad_path) as (obs, var, x, fmt, read):
        n_obs, n_vars = obs.n, len(var)

        # ---- cells and genes to keep; of obs, only the selected cells are held
        gene = obs.column("gene")
        if not isinstance(gene.dtype, pd.CategoricalDtype):
            gene = gene.astype(str).astype("category")
        rows, control = select_cells(gene, clusters, keep_controls=keep_controls,
                                     max_controls=max_controls, seed=seed)
        present = set(map(str, gene.cat.categories))
        n_controls_in = int(control.sum())
        sel_genes = gene.iloc[rows].astype(str).to_numpy()
        is_control = control[rows]
        del gene, control
        symbols = var["gene_name"].astype(str).to_numpy()
        cols = np.flatnonzero(pd.Series(symbols).isin(program_genes).to_numpy())

        missing_perts = [p for p in cluster_of if p not in present]
        present_symbols = set(symbols)
        missing_genes = [g for g in program_genes if g not in present_symbols]
        _warn_missing(h5ad_path, "perturbations", missing_perts)
        _warn_missing(h5ad_path, "program genes", missing_genes)
        if not (~is_control).any():
            raise InputError(h5ad_path, "obs/gene", "cells of Table S3's perturbation clusters",
                             f"none of {list(cluster_of)[:5]}…")
        if not len(cols):
            raise InputError(h5ad_path, "var/gene_name", "genes of Table S3's expression programs",
                             f"none of {program_genes[:5]}…")
        counts = pd.Series(symbols[cols]).value_counts()
        duplicated = sorted(counts.index[counts > 1])
        barcodes = obs.index(rows)
        obs_out = pd.DataFrame(index=pd.Index(barcodes, name=obs.index_name))
        obs_out["perturbation"] = pd.Categorical(sel_genes)
        obs_out["cluster"] = pd.Categorical(
            [CONTROL_CLUSTER if c else cluster_of[g] for g, c in zip(sel_genes, is_control)]
        )
        obs_out["is_control"] = is_control
        for col in REQUIRED_OBS[1:]:
            obs_out[col] = obs.column(col, rows).array

        # ---- X, streamed in contiguous row blocks
        step = max(1, min(int(chunk_rows), BLOCK_ELEMENTS // max(1, n_vars)))
        log.info("%s: %d x %d → %d cells (%d controls) x %d genes, %s X in blocks of %d rows",
                 h5ad_path, n_obs, n_vars, len(rows), int(is_control.sum()), len(cols), fmt, step, extra=CONSOLE)
        out = np.empty((len(rows), len(cols)), dtype=np.float32)
        var_names = var.index.to_numpy()
        if fmt == "dense":
            itemsize = x.dtype.itemsize
        else:
            itemsize = x["data"].dtype.itemsize + x["indices"].dtype.itemsize
        bytes_read = 0
        x_tic = last_log = time.perf_counter()
        for start in range(0, n_obs, step):
            stop = min(start + step, n_obs)
            lo, hi = np.searchsorted(rows, [start, stop])
            if lo == hi:
                continue  # no selected cell in this block: not read
            r = rows[lo:hi]
            a, b = int(r[0]), int(r[-1]) + 1  # contiguous span of this block's selected cells
            block = read(a, b, step)
            if fmt == "dense":
                sub = block[np.ix_(r - a, cols)]
                bytes_read += (b - a) * n_vars * itemsize
            else:
                sub = block[r - a][:, cols].toarray()
                bytes_read += block.nnz * itemsize
            check_counts(h5ad_path, sub, r, cols, barcodes[lo:hi], var_names)
            out[lo:hi] = sub
            if time.perf_counter() - last_log > 30:
                last_log = time.perf_counter()
                log.info("read %d / %d rows (%.0f MB/s)", stop, n_obs, bytes_read / 1e6 / (last_log - x_tic),
                         extra=CONSOLE)
        x_seconds = time.perf_counter() - x_tic

    var_index_name = var.index.name if var.index.name not in (None, "gene_name") else None
    var_out = pd.DataFrame({"gene_name": symbols[cols]},
                           index=pd.Index(var_names[cols].astype(str), name=var_index_name))

    report = {
        "input": str(h5ad_path),
        "input_bytes": int(Path(h5ad_path).stat().st_size),
        "table_s3": str(table_s3_path),
        "output": str(out_path),
        "x_format": fmt,
        "n_cells_in": int(n_obs),
        "n_genes_in": int(n_vars),
        "n_cells_out": len(rows),
        "n_genes_out": len(cols),
        "n_perturbations_out": len(set(sel_genes[~is_control])),
        "n_controls_in": n_controls_in,
        "n_controls_out": int(is_control.sum()),
        "keep_controls": bool(keep_controls),
        "max_controls": -1 if max_controls is None else int(max_controls),
        "seed": int(seed),
        "n_clusters": len(clusters),
        "n_cluster_perturbations": len(cluster_of),
        "n_program_genes": len(program_genes),
        "n_missing_perturbations": len(missing_perts),
        "missing_perturbations": missing_perts,
        "n_missing_genes": len(missing_genes),
        "missing_genes": missing_genes,
        "duplicated_symbols": duplicated,
        "chunk_rows": int(step),
        "bytes_read": int(bytes_read),
        "x_seconds": float(x_seconds),
    }
    import anndata

    adata = anndata.AnnData(X=out, obs=obs_out, var=var_out)
    adata.uns["preprocess"] = report
    write_h5ad(adata, out_path)
    report["seconds"] = float(time.perf_counter() - tic)
    log.info("wrote %s: %d cells x %d genes in %.1f s", out_path, len(rows), len(cols), report["seconds"],
             extra=CONSOLE)
    return report
