"""The raw Replogle h5ad, read without loading it, and the cheap checks of the inputs.

The input is 66 GB of dense float32 counts: obs and var are read on their own (anndata's
reader of the dataframe group, which understands the anndata 0.7 legacy layout), obs one
column at a time, and ``X`` through a reader of contiguous row blocks (dense or CSR).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import h5py
import numpy as np
import pandas as pd

from ..io import InputError
from .table_s3 import find_cluster, read_table_s3

log = logging.getLogger(__name__)

REQUIRED_OBS = ("gene", "gene_id", "gem_group", "UMI_count", "mitopercent")


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


def check_counts(path, sub: np.ndarray, rows: np.ndarray, cols: np.ndarray, barcodes, var_names) -> None:
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
def open_input(path):
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

