"""Replogle et al. 2022 (K562 genome-wide Perturb-seq): preprocessing and hold-out folds.

As in the released research code: keep the cells whose targeted gene (``obs["gene"]``)
is a member of one of Table S3's perturbation clusters, and the genes (columns) whose
symbol (``var["gene_name"]``) is a member of one of its expression programs; raw
counts, no normalisation (paper: 116,641 cells x 1,187 genes). ``non-targeting``
control cells are kept as well (optionally a seeded subset), because the "effect"
fold measures distances to them; :func:`make_fold` drops them again by default.

The input is 66 GB of dense float32 counts, so :func:`preprocess` never loads it:
obs and var are read on their own (anndata's reader of the dataframe group, which
understands the anndata 0.7 legacy layout) and ``X`` is streamed with h5py in
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

import contextlib
import difflib
import logging
import re
import time
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .io import CONSOLE, InputError, write_h5ad

log = logging.getLogger(__name__)

CONTROL = "non-targeting"
CONTROL_CLUSTER = "control"
REQUIRED_OBS = ("gene", "gene_id", "gem_group", "UMI_count", "mitopercent")
CLUSTER_COLUMNS = ("best_description", "members")
PROGRAM_COLUMNS = ("manual_annotation", "members")
BLOCK_ELEMENTS = 2**27  # one block of X holds at most this many values (512 MB of float32)
_MAX_NAMES = 20  # names listed in a warning


# ============================================================== Table S3


def _norm(text) -> str:
    """Case-folded, whitespace-normalised text (for header and description matching)."""
    return " ".join(str(text).split()).casefold()


def _split_members(cell) -> list[str]:
    """Unique, stripped symbols of a comma-separated cell, in order."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    return list(dict.fromkeys(s.strip() for s in str(cell).split(",") if s.strip()))


def _find_table(sheets: dict[str, pd.DataFrame], columns: tuple[str, ...], max_header_row: int = 50):
    """The first sheet having a row that holds all ``columns`` (the header); its rows below,
    restricted to those columns. ``None`` if no sheet has such a row."""
    wanted = [_norm(c) for c in columns]
    for name, raw in sheets.items():
        for i in range(min(len(raw), max_header_row)):
            header = [_norm(v) if isinstance(v, str) else "" for v in raw.iloc[i]]
            if all(c in header for c in wanted):
                body = raw.iloc[i + 1 :, [header.index(c) for c in wanted]]
                body.columns = list(columns)
                body = body.dropna(how="all").reset_index(drop=True)
                return name, body
    return None


def _sheets_found(sheets: dict[str, pd.DataFrame]) -> str:
    """Each sheet's name and its first non-empty row, for error messages."""
    parts = []
    for name, raw in sheets.items():
        first = raw.dropna(how="all").head(1)
        cells = [str(v) for v in first.iloc[0].dropna()][:8] if len(first) else []
        parts.append(f"{name!r}: {cells}")
    return "sheets " + "; ".join(parts) if parts else "no sheets"


def _read_sheets(path) -> dict[str, pd.DataFrame]:
    try:
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object, engine="openpyxl")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(path, "(file)", "an .xlsx workbook", f"{type(err).__name__}: {err}") from err


def expression_programs(path) -> dict[str, list[str]]:
    """Table S3's expression programs as gene sets: ``program: <manual_annotation>`` -> members
    (programs sharing an annotation are merged)."""
    found = _find_table(_read_sheets(path), PROGRAM_COLUMNS)
    if found is None:
        raise InputError(path, "sheet with columns manual_annotation, members",
                         "a sheet whose header row holds these columns", "none")
    programs: dict[str, list[str]] = {}
    for k, (name, members) in enumerate(zip(found[1]["manual_annotation"], found[1]["members"])):
        label = " ".join(str(name).split()) if isinstance(name, str) and name.strip() else f"program {k + 1}"
        merged = programs.setdefault(f"program: {label}", [])
        merged.extend(g for g in _split_members(members) if g not in merged)
    return {name: genes for name, genes in programs.items() if genes}


def read_table_s3(path) -> tuple[pd.DataFrame, list[str]]:
    """Perturbation clusters and expression-program genes of Replogle's Table S3.

    The sheets are found by their columns, whatever their order and names, and the
    header row may sit below title rows. Returns the clusters, one row per cluster in
    sheet order, with columns ``description`` (``best_description``) and ``members``
    (unique stripped symbols, in order; a perturbation may belong to several clusters),
    and the sorted unique symbols of all expression programs. ``clusters.attrs["path"]``
    is the workbook's path.
    """
    sheets = _read_sheets(path)
    found = _find_table(sheets, CLUSTER_COLUMNS)
    if found is None:
        raise InputError(path, "sheet with columns best_description, members",
                         "a sheet whose header row holds these columns", _sheets_found(sheets))
    _, body = found
    rows = []
    for k, (desc, members) in enumerate(zip(body["best_description"], body["members"])):
        members = _split_members(members)
        if not members:
            log.warning("%s: perturbation cluster %r (row %d) has no members; skipped", path, desc, k + 1)
            continue
        if not isinstance(desc, str) or not desc.strip():
            desc = f"unnamed cluster {k + 1}"
            log.warning("%s: a perturbation cluster has no best_description; called it %r", path, desc)
        rows.append({"description": " ".join(desc.split()), "members": members})
    if not rows:
        raise InputError(path, "best_description, members", "at least one cluster with members", "none")
    clusters = pd.DataFrame(rows, columns=["description", "members"])
    clusters.attrs["path"] = str(path)

    found = _find_table(sheets, PROGRAM_COLUMNS)
    if found is None:
        raise InputError(path, "sheet with columns manual_annotation, members",
                         "a sheet whose header row holds these columns", _sheets_found(sheets))
    genes = sorted({g for cell in found[1]["members"] for g in _split_members(cell)})
    if not genes:
        raise InputError(path, "manual_annotation, members", "expression programs with members", "none")
    n_listed = sum(len(m) for m in clusters["members"])
    n_unique = len({p for m in clusters["members"] for p in m})
    log.info("%s: %d perturbation clusters (%d perturbations listed, %d unique), %d program genes",
             path, len(clusters), n_listed, n_unique, len(genes))
    return clusters, genes


def cluster_of_perturbation(clusters: pd.DataFrame) -> dict[str, str]:
    """Perturbation → description of the first cluster listing it."""
    out: dict[str, str] = {}
    for desc, members in zip(clusters["description"], clusters["members"]):
        for p in members:
            out.setdefault(p, desc)
    return out


# ============================================================== preprocessing


def _attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Obs:
    """The columns of an h5ad's obs, each read on its own when asked for (so that only
    the columns needed are read, and each can be cut to the selected cells at once).

    Understands the anndata 0.7 legacy layout (categorical = integer codes whose
    attribute ``categories`` references ``obs/__categories/<col>``) as well as the
    current one (read with anndata's ``read_elem``); pre-0.7 files (obs a record array)
    are read whole through ``anndata.read_h5ad(backed="r")``.
    """

    def __init__(self, path, f: h5py.File):
        self.path = path
        g = f["obs"]
        self.frame: pd.DataFrame | None = None
        if isinstance(g, h5py.Group):
            self.group = g
            self.index_key = _attr_str(g.attrs.get("_index", "_index"))
            order = g.attrs.get("column-order", [])
            self.columns = [_attr_str(c) for c in np.atleast_1d(order)] if np.size(order) else []
            if self.index_key not in g:
                raise InputError(path, f"obs/{self.index_key}", "the obs index (cell barcodes)",
                                 f"keys {sorted(g)}")
            self.n = int(g[self.index_key].shape[0])
        else:
            import anndata

            adata = anndata.read_h5ad(path, backed="r")
            try:
                self.frame = adata.obs.copy()
            finally:
                adata.file.close()
            self.columns = list(self.frame.columns)
            self.n = len(self.frame)

    def _read(self, key):
        import anndata
        from anndata.io import read_elem

        with warnings.catch_warnings():
            # anndata warns on every element of a legacy (0.7) file
            warnings.filterwarnings("ignore", category=anndata.OldFormatWarning)
            elem = self.group[key]
            if isinstance(elem, h5py.Dataset) and "categories" in elem.attrs:  # legacy categorical
                cats_ds = self.group[elem.attrs["categories"]]
                ordered = bool(cats_ds.attrs.get("ordered", False))
                return pd.Categorical.from_codes(elem[()], read_elem(cats_ds), ordered=ordered)
            return read_elem(elem)

    def column(self, key, rows: np.ndarray | None = None):
        """A column as a Series (all cells, or the cells ``rows``, sorted); categoricals
        stay categorical, without unused categories. A plain column is read in blocks,
        keeping only ``rows``, so that a string column of millions of cells is never
        held whole."""
        elem = self.group[key] if self.frame is None else None
        if self.frame is not None:
            values = self.frame[key].array[rows] if rows is not None else self.frame[key].array
        elif (rows is not None and isinstance(elem, h5py.Dataset) and elem.ndim == 1
              and "categories" not in elem.attrs):
            values = _read_rows(elem, rows)
        else:
            values = self._read(key)
            if rows is not None:
                values = values[rows]
        if isinstance(values, pd.Categorical):
            values = values.remove_unused_categories()
        elif isinstance(values, np.ndarray) and values.ndim == 1:
            pass
        else:
            values = np.asarray(values)
        return pd.Series(values, copy=False)

    def index(self, rows: np.ndarray) -> np.ndarray:
        if self.frame is not None:
            return self.frame.index.to_numpy()[rows].astype(str)
        return self.column(self.index_key, rows).astype(str).to_numpy()

    @property
    def index_name(self) -> str:
        return self.index_key if self.frame is None and self.index_key != "_index" else "cell_barcode"


def _read_rows(ds: h5py.Dataset, rows: np.ndarray, block: int = 1 << 18) -> np.ndarray:
    """``ds[rows]`` (``rows`` sorted) of a 1-D dataset, read in contiguous blocks."""
    is_str = h5py.check_string_dtype(ds.dtype) is not None
    src = ds.asstr() if is_str else ds
    parts = []
    for start in range(0, ds.shape[0], block):
        lo, hi = np.searchsorted(rows, [start, start + block])
        if lo < hi:
            r = rows[lo:hi]
            parts.append(np.asarray(src[int(r[0]) : int(r[-1]) + 1])[r - r[0]])
    if not parts:
        return np.empty(0, dtype=object if is_str else ds.dtype)
    return np.concatenate(parts)


def _read_var(path, f: h5py.File) -> pd.DataFrame:
    import anndata
    from anndata.io import read_elem

    if isinstance(f["var"], h5py.Group):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=anndata.OldFormatWarning)
            return read_elem(f["var"])
    adata = anndata.read_h5ad(path, backed="r")
    try:
        return adata.var.copy()
    finally:
        adata.file.close()


def _open_frames(path, f: h5py.File) -> tuple[_Obs, pd.DataFrame]:
    """obs (lazy) and var of an open h5ad, checked for the fields preprocessing needs."""
    missing = [k for k in ("X", "obs", "var") if k not in f]
    if missing:
        raise InputError(path, missing[0], "an AnnData h5ad with X, obs and var", f"keys {sorted(f)}")
    obs = _Obs(path, f)
    for col in REQUIRED_OBS:
        if col not in obs.columns:
            raise InputError(path, f"obs/{col}", "a column of per-cell values", f"columns {obs.columns}")
    var = _read_var(path, f)
    if "gene_name" not in var.columns:
        raise InputError(path, "var/gene_name", "gene symbols per column of X",
                         f"columns {list(var.columns)}")
    return obs, var


def _warn_missing(path, what: str, names: list[str]) -> None:
    if names:
        shown = ", ".join(names[:_MAX_NAMES]) + (", …" if len(names) > _MAX_NAMES else "")
        log.warning("%s: %d %s named by Table S3 are absent from the data: %s", path, len(names), what, shown)


def _x_reader(path, x):
    """(format, block reader) for ``X``: the reader maps a row range [a, b) to an array
    of those rows (all columns), reusing one buffer."""
    n_obs, n_vars = _x_shape(path, x)
    if isinstance(x, h5py.Dataset):
        if x.ndim != 2 or x.dtype.kind not in "fiu":
            raise InputError(path, "X", "a 2-D numeric matrix of counts", f"{x.dtype} of shape {x.shape}")
        buf: dict = {}

        def read_dense(a, b, rows_max):
            if "buf" not in buf:
                buf["buf"] = np.empty((min(rows_max, n_obs), n_vars), dtype=x.dtype)
            out = buf["buf"][: b - a]
            x.read_direct(out, np.s_[a:b], np.s_[0 : b - a])
            return out

        return "dense", read_dense
    fmt = x.attrs.get("encoding-type", x.attrs.get("h5sparse_format", ""))
    fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
    if fmt not in ("csr_matrix", "csr"):
        raise InputError(path, "X", "a dense dataset or a CSR matrix",
                         f"a group of encoding {fmt or 'unknown'!r}")
    import scipy.sparse as sp

    indptr = x["indptr"][:]
    if x["data"].dtype.kind not in "fiu":
        raise InputError(path, "X/data", "numeric counts", str(x["data"].dtype))

    def read_csr(a, b, rows_max):
        p0, p1 = int(indptr[a]), int(indptr[b])
        return sp.csr_matrix((x["data"][p0:p1], x["indices"][p0:p1], indptr[a : b + 1] - p0),
                             shape=(b - a, n_vars))

    return "csr", read_csr


def _x_shape(path, x) -> tuple[int, int]:
    if isinstance(x, h5py.Dataset):
        return tuple(int(s) for s in x.shape) if x.ndim == 2 else (-1, -1)
    shape = x.attrs.get("shape", x.attrs.get("h5sparse_shape"))
    if shape is None or not all(k in x for k in ("data", "indices", "indptr")):
        raise InputError(path, "X", "a dense dataset or a CSR group (data, indices, indptr, shape)",
                         f"keys {sorted(x)}")
    return int(shape[0]), int(shape[1])


def _check_counts(path, sub: np.ndarray, rows: np.ndarray, cols: np.ndarray, barcodes, var_names) -> None:
    """InputError naming the first cell (and gene) of ``sub`` that is not a count."""
    if sub.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(sub) | (sub < 0) | (sub != np.floor(sub))
    else:
        bad = sub < 0
    if bad.any():
        i, j = np.unravel_index(np.argmax(bad), bad.shape)
        raise InputError(
            path, "X", "finite, non-negative integer counts",
            f"{sub[i, j]!r} in row {int(rows[i])} (cell {barcodes[i]}), "
            f"column {int(cols[j])} (gene {var_names[cols[j]]})",
        )


@contextlib.contextmanager
def _open_input(path):
    """An input h5ad open for reading: (obs, var, X, its format, its block reader), checked
    for the fields and the shape preprocessing needs."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, "(file)", "a readable .h5ad file", str(err)) from err
    with f:
        obs, var = _open_frames(path, f)
        x = f["X"]
        if _x_shape(path, x) != (obs.n, len(var)):
            raise InputError(path, "X", f"shape ({obs.n}, {len(var)}) matching obs and var", str(_x_shape(path, x)))
        yield obs, var, x, *_x_reader(path, x)


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
    with _open_input(h5ad_path) as (obs, var, _, fmt, read):
        for row in np.unique([0, obs.n - 1]) if obs.n else []:
            block = read(int(row), int(row) + 1, 1)
            block = block.toarray() if fmt == "csr" else np.asarray(block)
            cols = np.arange(len(var))
            _check_counts(h5ad_path, block, np.array([row]), cols, obs.index(np.array([row])), var.index.to_numpy())
    report = {"h5ad": str(h5ad_path), "table_s3": str(table_s3_path), "n_cells": obs.n, "n_genes": len(var),
              "x_format": fmt, "n_clusters": len(clusters), "folds": [fold["name"] for fold in folds]}
    log.info("inputs checked: %s", report)
    return report


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
    with _open_input(h5ad_path) as (obs, var, x, fmt, read):
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
            _check_counts(h5ad_path, sub, r, cols, barcodes[lo:hi], var_names)
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


# ============================================================== folds


def _perturbations(adata) -> np.ndarray:
    return adata.obs["perturbation"].astype(str).to_numpy()


def effect_scores(
    adata, *, n_pcs: int = 50, max_cells: int = 1000, seed: int = 0, path="<dataset>"
) -> pd.Series:
    """Linear-kernel MMD of each perturbation to the ``non-targeting`` controls, largest first.

    Embedding: PCA (``n_pcs`` components, seeded) fitted on log1p of counts normalised
    to 10^4 per cell, over all cells. Each perturbation's first ``max_cells`` cells (in
    obs order) are compared with the first ``max_cells`` control cells.
    """
    from sklearn.decomposition import PCA

    pert = _perturbations(adata)
    control = pert == CONTROL
    if not control.any():
        raise InputError(path, "obs/perturbation", f"'{CONTROL}' control cells for the effect fold "
                         "(preprocess with keep_controls=True)", "none")
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.array(adata.X, dtype=np.float32)
    x = x.astype(np.float32, copy=False)
    lib = x.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    x *= 1e4 / lib
    np.log1p(x, out=x)
    k = int(min(n_pcs, x.shape[0], x.shape[1]))
    emb = PCA(n_components=k, random_state=seed, copy=False).fit_transform(x)  # x is ours: centred in place
    del x
    ctrl_mean = emb[np.flatnonzero(control)[:max_cells]].mean(axis=0)
    codes, names = pd.factorize(pert)
    order = np.argsort(codes, kind="stable")  # cells grouped by perturbation, obs order kept
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    scores = {}
    for c, name in enumerate(names):
        if name == CONTROL:
            continue
        cells = order[bounds[c] : bounds[c + 1]][:max_cells]
        # Linear-kernel MMD² = mean(XXᵀ) + mean(YYᵀ) − 2·mean(XYᵀ) = ‖mean(X) − mean(Y)‖²:
        # the squared distance between the mean embeddings.
        diff = emb[cells].mean(axis=0) - ctrl_mean
        scores[name] = float(diff @ diff)
    s = pd.Series(scores, name="mmd").rename_axis("perturbation")
    # largest first; ties by name so the ranking is deterministic
    return s.iloc[np.lexsort((s.index.to_numpy(), -s.to_numpy()))]


def find_cluster(clusters: pd.DataFrame, fold: dict) -> list[str]:
    """Members of the cluster a fold names: ``description`` must equal a best_description
    (case-insensitive, whitespace-normalised); ``cluster`` may also be a word or phrase
    found in exactly one description."""
    key = "description" if fold.get("description") else "cluster"
    wanted = str(fold[key])
    descs = list(clusters["description"])
    by_norm = {_norm(d): m for d, m in zip(descs, clusters["members"])}
    where = clusters.attrs.get("path", "Table S3")
    if _norm(wanted) in by_norm:
        return list(by_norm[_norm(wanted)])
    if key == "cluster":
        pattern = re.compile(r"(?<![0-9a-z])" + re.escape(_norm(wanted)) + r"(?![0-9a-z])")
        hits = [i for i, d in enumerate(descs) if pattern.search(_norm(d))]
        if len(hits) == 1:
            return list(clusters["members"].iloc[hits[0]])
        if len(hits) > 1:
            raise InputError(where, "best_description", f"exactly one perturbation cluster whose description "
                             f"contains {wanted!r} (fold {fold.get('name')!r})",
                             f"{len(hits)}: {[descs[i] for i in hits[:10]]}")
    norm_to_desc = {_norm(d): d for d in descs}
    close = difflib.get_close_matches(_norm(wanted), list(norm_to_desc), n=3, cutoff=0.0)
    close = [norm_to_desc[c] for c in close]
    raise InputError(where, "best_description",
                     f"a perturbation cluster described as {wanted!r} (fold {fold.get('name')!r})",
                     f"no such cluster; closest: {close}")


def fold_perturbations(
    adata, fold: dict, clusters: pd.DataFrame, *, n_effect: int = 30, n_pcs: int = 50,
    max_cells: int = 1000, seed: int = 0, path="<dataset>",
) -> list[str]:
    """The held-out perturbations of a fold (a config entry).

    ``{"name": ..., "description": <Table S3 best_description>}``: the members of that
    cluster (matched case-insensitively, whitespace-normalised), in Table S3 order,
    those absent from ``adata`` dropped with a warning. ``{"name": ..., "cluster": ...}``
    (the config schema's key) is the same, or a word/phrase found in exactly one
    description.
    ``{"name": ..., "effect": True}``: the ``n_effect`` perturbations farthest from the
    controls (:func:`effect_scores`), farthest first.
    """
    name = fold.get("name", "<unnamed fold>")
    pert = _perturbations(adata)
    if fold.get("effect"):
        scores = effect_scores(adata, n_pcs=n_pcs, max_cells=max_cells, seed=seed, path=path)
        if n_effect >= len(scores):
            raise InputError(path, "obs/perturbation",
                             f"more than n_effect={n_effect} perturbations for fold {name!r} "
                             "(some must stay for training)", f"{len(scores)}")
        held = list(scores.index[:n_effect])
        log.info("fold %s: the %d perturbations farthest from control (MMD %.3g … %.3g)",
                 name, n_effect, scores.iloc[0], scores.iloc[n_effect - 1])
        return held
    if not (fold.get("description") or fold.get("cluster")):
        raise InputError("<config>", f"folds/{name}",
                         "a 'description' or 'cluster' (Table S3 best_description) or 'effect: true'",
                         str(fold))
    members = find_cluster(clusters, fold)
    present = set(pert) - {CONTROL}
    held = [p for p in members if p in present]
    absent = [p for p in members if p not in present]
    if absent:
        log.warning("fold %s: %d of its %d perturbations are absent from %s and dropped: %s",
                    name, len(absent), len(members), path, ", ".join(absent[:_MAX_NAMES]))
    if not held:
        raise InputError(path, "obs/perturbation", f"cells of the perturbations of fold {name!r}",
                         f"none of {members[:10]}")
    return held


def make_fold(
    adata, heldout: list[str], fold_name: str, *, keep_controls_in_training: bool = False, path="<dataset>",
):
    """A training dataset for one fold (see :mod:`sparseshift.run`): X counts,
    ``obs["perturbation"]`` categorical in the order of ``uns["perturbations"]`` (training
    perturbations sorted, then held-out ones sorted), ``obs["split"]`` ``train`` /
    ``heldout``, ``uns["fold"]``, ``uns["heldout_perturbations"]``. Control cells are
    dropped unless ``keep_controls_in_training`` (then ``non-targeting`` is a training
    perturbation)."""
    pert = _perturbations(adata)
    held = sorted(dict.fromkeys(heldout))
    present = set(pert)
    if CONTROL in held:
        raise InputError("<fold>", "heldout", f"perturbations other than {CONTROL!r}", "it is listed")
    absent = [p for p in held if p not in present]
    if absent or not held:
        raise InputError(path, "obs/perturbation",
                         f"cells of every held-out perturbation of fold {fold_name!r}",
                         f"none for {absent[:10]}" if absent else "no held-out perturbations")
    keep = np.ones(len(pert), dtype=bool) if keep_controls_in_training else pert != CONTROL
    out = adata[keep].copy() if not keep.all() else adata.copy()
    pert = pert[keep]
    train = sorted(set(pert) - set(held))
    if not train:
        raise InputError(path, "obs/perturbation",
                         f"training perturbations besides the held-out ones of {fold_name!r}", "none")
    order = train + held
    is_held = np.isin(pert, held)
    out.obs["perturbation"] = pd.Categorical(pert, categories=order)
    out.obs["split"] = pd.Categorical(np.where(is_held, "heldout", "train"), categories=["train", "heldout"])
    out.uns["perturbations"] = order
    out.uns["fold"] = fold_name
    out.uns["heldout_perturbations"] = held
    log.info("fold %s: %d training perturbations (%d cells), %d held out (%d cells)",
             fold_name, len(train), int((~is_held).sum()), len(held), int(is_held.sum()))
    return out
