"""Any h5ad read without loading it: obs column by column, var, and a count matrix (``X`` or a
layer, dense or CSR) in contiguous row blocks.

The screens arm (:mod:`sparseshift.screens.prepare`) and the Replogle front
(:mod:`sparseshift.replogle.h5ad`) read their inputs through this module, so that an input of
tens of gigabytes is never held whole: only the selected rows of each block are kept.
"""

from __future__ import annotations

import contextlib
import warnings

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io import InputError


def attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LazyObs:
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
            self.index_key = attr_str(g.attrs.get("_index", "_index"))
            order = g.attrs.get("column-order", [])
            self.columns = [attr_str(c) for c in np.atleast_1d(order)] if np.size(order) else []
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
            values = read_rows(elem, rows)
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


def read_rows(ds: h5py.Dataset, rows: np.ndarray, block: int = 1 << 18) -> np.ndarray:
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


def read_var(path, f: h5py.File) -> pd.DataFrame:
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


def matrix_reader(path, x, field: str = "X"):
    """(format, block reader) for the matrix ``x`` (``field``: ``X`` or ``layers/<name>``, named in
    errors): the reader maps a row range [a, b) to an array of those rows (all columns), reusing
    one buffer."""
    n_obs, n_vars = matrix_shape(path, x, field)
    if isinstance(x, h5py.Dataset):
        if x.ndim != 2 or x.dtype.kind not in "fiu":
            raise InputError(path, field, "a 2-D numeric matrix of counts", f"{x.dtype} of shape {x.shape}")
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
        raise InputError(path, field, "a dense dataset or a CSR matrix",
                         f"a group of encoding {fmt or 'unknown'!r}")
    indptr = x["indptr"][:]
    if x["data"].dtype.kind not in "fiu":
        raise InputError(path, f"{field}/data", "numeric counts", str(x["data"].dtype))

    def read_csr(a, b, rows_max):
        p0, p1 = int(indptr[a]), int(indptr[b])
        return sp.csr_matrix((x["data"][p0:p1], x["indices"][p0:p1], indptr[a : b + 1] - p0),
                             shape=(b - a, n_vars))

    return "csr", read_csr


def matrix_shape(path, x, field: str = "X") -> tuple[int, int]:
    if isinstance(x, h5py.Dataset):
        return tuple(int(s) for s in x.shape) if x.ndim == 2 else (-1, -1)
    shape = x.attrs.get("shape", x.attrs.get("h5sparse_shape"))
    if shape is None or not all(k in x for k in ("data", "indices", "indptr")):
        raise InputError(path, field, "a dense dataset or a CSR group (data, indices, indptr, shape)",
                         f"keys {sorted(x)}")
    return int(shape[0]), int(shape[1])


def check_counts(
    path, sub, rows: np.ndarray, cols: np.ndarray, barcodes, var_names, field: str = "X", hint: str = "",
) -> None:
    """InputError naming the first cell (and gene) of ``sub`` (dense, or CSR; rows ``rows`` and
    columns ``cols`` of the matrix ``field``) that is not a count; ``hint`` ends the message."""
    values = sub.data if sp.issparse(sub) else sub
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    else:
        bad = values < 0
    if not bad.any():
        return
    if sp.issparse(sub):  # the first bad stored value: its row from indptr, its column from indices
        k = int(np.argmax(bad))
        i, j, value = int(np.searchsorted(sub.indptr, k, side="right") - 1), int(sub.indices[k]), values[k]
    else:
        i, j = np.unravel_index(np.argmax(bad), bad.shape)
        value = values[i, j]
    raise InputError(
        path, field, "finite, non-negative integer counts",
        f"{value!r} in row {int(rows[i])} (cell {barcodes[i]}), "
        f"column {int(cols[j])} (gene {var_names[cols[j]]}){hint}",
    )


BLOCK_ELEMENTS = 2**27  # one block of a matrix holds at most this many values (512 MB of float32)


def block_rows(chunk_rows: int, n_vars: int) -> int:
    """Rows per contiguous block: ``chunk_rows``, fewer when a block would hold more than
    ``BLOCK_ELEMENTS`` values."""
    return max(1, min(int(chunk_rows), BLOCK_ELEMENTS // max(1, n_vars)))


def matrix_element(path, f: h5py.File, key: str):
    """The count matrix ``key`` of an open h5ad: ``X`` or ``layers/<name>``; an InputError names
    the layers present when it is absent."""
    if key == "X":
        return f["X"]
    name = key.removeprefix("layers/")
    layers = layer_names(f)
    if name not in layers:
        raise InputError(path, f"layers/{name}", "a layer of counts", f"layers {layers}")
    return f["layers"][name]


def layer_names(f: h5py.File) -> list[str]:
    return sorted(f["layers"]) if "layers" in f else []


@contextlib.contextmanager
def open_h5ad(path):
    """An h5ad open for reading: (file, obs read lazily, var); an InputError when the file is
    not an h5ad (unreadable, or without X, obs and var)."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, "(file)", "a readable .h5ad file", str(err)) from err
    with f:
        missing = [k for k in ("X", "obs", "var") if k not in f]
        if missing:
            raise InputError(path, missing[0], "an AnnData h5ad with X, obs and var", f"keys {sorted(f)}")
        yield f, LazyObs(path, f), read_var(path, f)
