"""A user's screen made into a training dataset: any perturbation h5ad in the scPerturb / pertpy
conventions, read in row blocks, checked, and reduced to labelled cells x selected genes.

Steps of :func:`prepare_screen`, each driven by a config key of the screen (config/README.md):

1. labels: ``obs[perturbation_key]``; the ``control`` labels become ``control``; with a
   ``combination_separator`` a label's members are parsed (control members such as GEARS'
   ``ctrl`` dropped, the rest sorted, so ``B+A`` and ``A+B`` are one combination) and recorded
   in ``uns["combinations"]``: the members are the model's perturbations (a member seen only
   inside combinations too) and a combination a condition whose cells' prior mean is the sum
   of its members' shifts (:mod:`sparseshift.data`);
2. cells: perturbations with fewer than ``min_cells`` cells dropped (listed in the log), at
   most ``max_cells`` per perturbation (a seeded sample);
3. held-out perturbations: a list, a fraction drawn with the seed, or none;
4. counts: ``X`` or a layer (by default the ``counts`` layer when there is one), dense or CSR,
   read in contiguous row blocks of which only the selected cells are kept; every block is
   checked to hold non-negative integers;
5. genes: the ``n_genes`` highly variable genes (scanpy, ``flavor="seurat_v3"`` on the counts,
   per batch with ``batch_key``) or the genes of a list file.

The output (written atomically) is the dataset contract of :mod:`sparseshift.data`: CSR float32
counts in ``X``, the input's obs columns of the kept cells with ``perturbation`` and ``split``,
var with ``gene_name``, and in ``uns`` the perturbations, held-out ones, controls, combinations
and the report of what was kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io import CONSOLE, InputError, write_h5ad
from .dataset import split_perturbations
from .reader import block_rows, check_counts, layer_names, matrix_element, matrix_reader, matrix_shape, open_h5ad

log = logging.getLogger(__name__)

CONTROL = "control"  # the controls' label in every screen's dataset
MAX_NAMES = 20  # names listed in a message


def _names(values) -> str:
    values = list(values)
    return ", ".join(map(str, values[:MAX_NAMES])) + (", …" if len(values) > MAX_NAMES else "")


def canonical_label(label: str, controls: set[str], separator: str | None) -> tuple[str, list[str]]:
    """A raw label as the model sees it, and its members: a control label is ``control``; with
    a separator, the members other than controls, sorted (``A+ctrl`` is ``A``, ``B+A`` is ``A+B``)."""
    if label in controls:
        return CONTROL, []
    if not separator:
        return label, [label]
    members = sorted({m.strip() for m in label.split(separator) if m.strip() and m.strip() not in controls})
    if not members:
        return CONTROL, []
    return separator.join(members), members


def perturbation_labels(raw: pd.Series, controls: list[str], separator: str | None) -> tuple[np.ndarray, dict]:
    """Every cell's canonical label (empty for a missing label) and the members of each label,
    computed once per distinct raw label."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    canon, members = [], {}
    for label in uniques.astype(str):
        name, parts = canonical_label(label, set(controls), separator)
        canon.append(name)
        members.setdefault(name, parts)
    canon = np.asarray(canon + [""], dtype=object)  # code -1 (missing) maps to ""
    return canon[codes], members


def choose_heldout(heldout, perturbations: list[str], controls, separator, seed: int, path, key) -> list[str]:
    """The held-out perturbations: ``None`` / ``"none"``: none; a list of labels (in the input's
    spelling, canonicalised like the data's); a fraction in (0, 1): that share of the
    perturbations, at least one, drawn with ``seed``. Controls are never held out."""
    if heldout is None or heldout == "none":
        return []
    if isinstance(heldout, (int, float)):
        n = max(1, int(round(heldout * len(perturbations))))
        if n >= len(perturbations):
            raise InputError(path, f"obs/{key}", f"more perturbations than the {n} held out (config key heldout "
                             f"{heldout}), so that some stay for training", f"{len(perturbations)}")
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(sorted(perturbations), size=n, replace=False).tolist())
    names = [canonical_label(str(name), set(controls), separator)[0] for name in heldout]
    if CONTROL in names:
        raise InputError(path, f"obs/{key}", "held-out perturbations other than the controls (config key heldout)",
                         f"a control label in {list(heldout)}")
    absent = [str(h) for h, n in zip(heldout, names) if n not in perturbations]
    if absent:
        raise InputError(path, f"obs/{key}", "every held-out perturbation of the config (key heldout) among the "
                         "perturbations kept", f"none for {absent}; perturbations present: {_names(sorted(perturbations))}")
    return sorted(set(names))


def select_cells(labels: np.ndarray, min_cells: int, max_cells: int | None, seed: int) -> tuple[np.ndarray, dict]:
    """Sorted rows kept: labelled cells of perturbations with at least ``min_cells`` cells, at
    most ``max_cells`` of each (a seeded sample); and the dropped perturbations with their counts."""
    counts = pd.Series(labels[labels != ""]).value_counts()
    dropped = counts[counts < min_cells]
    keep_labels = counts.index[counts >= min_cells]
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")  # the cells grouped by label once, in input order within
    grouped = labels[order]
    rows = [order[np.searchsorted(grouped, lab, "left"):np.searchsorted(grouped, lab, "right")]
            for lab in sorted(keep_labels)]
    if max_cells is not None:
        rows = [np.sort(rng.choice(r, size=max_cells, replace=False)) if len(r) > max_cells else r for r in rows]
    kept = np.sort(np.concatenate(rows)) if rows else np.empty(0, dtype=np.int64)
    return kept, {str(k): int(v) for k, v in dropped.items()}


def counts_field(settings: dict, layers: list[str]) -> str:
    """The matrix of counts: the config's ``counts`` (``X`` or a layer name), by default the
    ``counts`` layer when there is one, else ``X``."""
    choice = settings.get("counts")
    if choice is None:
        return "layers/counts" if "counts" in layers else "X"
    return "X" if choice == "X" else f"layers/{choice}"


def read_counts(path, f, field: str, rows: np.ndarray, barcodes, var_names, chunk_rows: int) -> sp.csr_matrix:
    """The rows ``rows`` (sorted) of the count matrix ``field`` as float32 CSR, read in contiguous
    row blocks (only the blocks' spans of selected rows); every block checked to be counts."""
    x = matrix_element(path, f, field)
    n_obs, n_vars = matrix_shape(path, x, field)
    if n_vars != len(var_names):
        raise InputError(path, field, f"{len(var_names)} columns, one per row of var", f"shape {(n_obs, n_vars)}")
    fmt, read = matrix_reader(path, x, field)
    hint = ""
    if field == "X":
        hint = (f"; X looks normalised, not raw: set the screen's config key counts to a layer of raw counts "
                f"(layers present: {layer_names(f)})")
    cols = np.arange(n_vars)
    step = block_rows(chunk_rows, n_vars)
    if fmt == "csr":  # the output's size is known from indptr: filled in place, never concatenated
        row_nnz = np.diff(x["indptr"][:])[rows]
        indptr = np.concatenate([[0], np.cumsum(row_nnz)]).astype(np.int64)
        data = np.empty(int(indptr[-1]), dtype=np.float32)
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
    parts = []
    for start in range(0, n_obs, step):
        lo, hi = np.searchsorted(rows, [start, min(start + step, n_obs)])
        if lo == hi:
            continue
        r = rows[lo:hi]
        a, b = int(r[0]), int(r[-1]) + 1
        sub = read(a, b, step)[r - a]
        check_counts(path, sub, r, cols, barcodes[lo:hi], var_names, field, hint)
        if fmt == "csr":
            data[indptr[lo]:indptr[hi]] = sub.data
            indices[indptr[lo]:indptr[hi]] = sub.indices
        else:
            parts.append(sp.csr_matrix(sub.astype(np.float32, copy=False)))
    if fmt == "csr":
        return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_vars))
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_vars), dtype=np.float32)


def read_gene_list(path) -> list[str]:
    """Gene symbols of a list file: one per line (blank lines and ``#`` comments skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise InputError(path, "(file)", "a readable gene list (one symbol per line)", str(err)) from err
    genes = [line.split("#")[0].strip() for line in lines]
    genes = list(dict.fromkeys(g for g in genes if g))
    if not genes:
        raise InputError(path, "(lines)", "one gene symbol per line", "no gene")
    return genes


def select_genes(counts: sp.csr_matrix, symbols: np.ndarray, settings: dict, batches, gene_list, path) -> tuple[np.ndarray, dict]:
    """Columns kept (in input order): the genes of ``gene_list`` (a list of symbols; absent ones
    warned by name) or the ``n_genes`` highly variable genes of scanpy's seurat_v3 on the counts
    (per batch when ``batches`` is given)."""
    if gene_list is not None:
        present = set(symbols)
        absent = [g for g in gene_list if g not in present]
        if absent:
            log.warning("%s: %d of the %d genes of the gene list are absent from the data: %s", path, len(absent),
                        len(gene_list), _names(absent))
        cols = np.flatnonzero(pd.Series(symbols).isin(gene_list).to_numpy())
        if not len(cols):
            raise InputError(path, "var", "genes of the gene list (config key genes)", f"none of {_names(gene_list)}")
        return cols, {"gene_selection": "list", "n_genes_absent": len(absent), "genes_absent": absent}
    n_genes = settings["n_genes"]
    if n_genes >= counts.shape[1]:
        return np.arange(counts.shape[1]), {"gene_selection": "all"}
    import anndata
    import scanpy as sc

    adata = anndata.AnnData(X=counts, obs=pd.DataFrame({"batch": batches} if batches is not None else {},
                                                       index=pd.RangeIndex(counts.shape[0]).astype(str)))
    hvg = sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_genes, inplace=False,
                                      batch_key="batch" if batches is not None else None)
    cols = np.flatnonzero(hvg["highly_variable"].to_numpy())
    return cols, {"gene_selection": "seurat_v3"}


def single_perturbations(adata, combinations: dict[str, list[str]]) -> list[str]:
    """The model's perturbations of a dataset with combinations: its single labels and every
    combination's members (those only seen inside combinations too); the ones a training cell
    carries (alone or in a combination) sorted, then the others sorted."""
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    train = adata.obs["split"].astype(str).to_numpy() == "train"

    def singles(values) -> set[str]:
        return {m for v in set(values) for m in combinations.get(v, [v])}

    trained = singles(labels[train])
    rest = singles(labels[~train]) - trained
    return sorted(trained) + sorted(rest)


def _h5_safe(value):
    """A nested value as h5ad's uns can store it: None dropped, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _h5_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_h5_safe(v) for v in value]
    return value


def prepare_screen(path, settings: dict, out_path, *, gene_list: list[str] | None = None,
                   chunk_rows: int = 16384) -> dict:
    """Read, check and reduce the screen ``path`` as its config entry ``settings`` says (see the
    module's docstring); write the training dataset to ``out_path`` and return its report."""
    tic = time.perf_counter()
    key, name, seed = settings["perturbation_key"], settings["name"], settings["seed"]
    controls = settings["control"] if isinstance(settings["control"], list) else [settings["control"]]
    separator = settings.get("combination_separator")
    with open_h5ad(path) as (f, obs, var):
        if key not in obs.columns:
            raise InputError(path, f"obs/{key}", "the column of perturbation labels (config key perturbation_key)",
                             f"obs columns {obs.columns}")
        raw = obs.column(key)
        labels, members = perturbation_labels(raw.astype(object).where(raw.notna(), None), controls, separator)
        if not (labels == CONTROL).any():
            frequent = pd.Series(raw.astype(str)).value_counts().head(10)
            raise InputError(path, f"obs/{key}", f"control cells labelled {controls} (config key control)",
                             "none; the most frequent labels are " + ", ".join(f"{k} ({v})" for k, v in frequent.items()))
        n_missing = int((labels == "").sum())
        if n_missing:
            log.warning("%s: %d cells without a perturbation label (obs/%s) are left out", path, n_missing, key)
        rows, dropped = select_cells(labels, settings["min_cells"], settings.get("max_cells"), seed)
        if dropped:
            log.warning("%s: %d perturbations with fewer than %d cells (config key min_cells) are dropped: %s", path,
                        len(dropped), settings["min_cells"], _names(f"{k} ({v})" for k, v in dropped.items()))
        if CONTROL in dropped:
            raise InputError(path, f"obs/{key}", f"at least min_cells={settings['min_cells']} control cells",
                             f"{dropped[CONTROL]}")
        kept_labels = labels[rows]
        perturbations = sorted(set(kept_labels) - {CONTROL})
        if not perturbations:
            raise InputError(path, f"obs/{key}", f"perturbations with at least min_cells={settings['min_cells']} cells",
                             "none besides the controls")
        heldout = choose_heldout(settings.get("heldout"), perturbations, controls, separator, seed, path, key)
        if not settings["controls_in_training"]:
            rows = rows[kept_labels != CONTROL]
            kept_labels = labels[rows]

        field = counts_field(settings, layer_names(f))
        barcodes = obs.index(rows)
        var_names = var.index.to_numpy().astype(str)
        symbols_key = settings.get("gene_symbols")
        if symbols_key is not None and symbols_key not in var.columns:
            raise InputError(path, f"var/{symbols_key}", "a column of gene symbols (config key gene_symbols)",
                             f"var columns {list(var.columns)}")
        symbols = var[symbols_key].astype(str).to_numpy() if symbols_key else var_names
        log.info("%s: %d cells x %d genes; %d cells of %d perturbations and the controls kept; counts from %s",
                 path, obs.n, len(var), len(rows), len(perturbations), field, extra=CONSOLE)
        counts = read_counts(path, f, field, rows, barcodes, var_names, chunk_rows)
        batch_key = settings.get("batch_key")
        if batch_key is not None and batch_key not in obs.columns:
            raise InputError(path, f"obs/{batch_key}", "a column of batches (config key batch_key)",
                             f"obs columns {obs.columns}")
        obs_out = pd.DataFrame({c: obs.column(c, rows).array for c in obs.columns if c != obs.index_key},
                               index=pd.Index(barcodes))
    batches = obs_out[batch_key].astype(str).to_numpy() if batch_key else None
    cols, genes_report = select_genes(counts, symbols, settings, batches, gene_list, path)
    if "perturbation" in obs_out:  # the input's own column is kept beside the model's labels
        obs_out = obs_out.rename(columns={"perturbation": "perturbation_label"})
    obs_out["perturbation"] = kept_labels
    var_out = var.iloc[cols].copy()
    var_out.index = pd.Index(var_names[cols], name=var.index.name)
    var_out["gene_name"] = symbols[cols]
    import anndata

    adata = anndata.AnnData(X=counts[:, cols], obs=obs_out, var=var_out)
    del counts
    split_perturbations(adata, heldout, f"screen {name!r}", path)
    kept = set(perturbations)
    combinations = {k: v for k, v in members.items() if len(v) > 1 and k in kept}
    if combinations:
        adata.uns["perturbations"] = single_perturbations(adata, combinations)
    report = {
        "input": str(path),
        "counts": field,
        "n_cells_in": int(obs.n),
        "n_genes_in": int(len(var)),
        "n_cells_out": int(adata.n_obs),
        "n_genes_out": int(adata.n_vars),
        "n_perturbations": len(perturbations) if not combinations else len(set(adata.uns["perturbations"]) - {CONTROL}),
        "n_heldout": len(heldout),
        "n_combinations": len(combinations),
        "n_controls": int((kept_labels == CONTROL).sum()),
        "n_unlabelled": n_missing,
        "dropped_perturbations": dropped,
        **genes_report,
    }
    adata.uns.update(_h5_safe({
        "screen": name,
        "controls": controls,
        "combinations": combinations,
        "batch_key": batch_key,
        "settings": {k: v for k, v in settings.items() if k not in ("name",)},
        "prepare": report,
    }))
    write_h5ad(adata, out_path)
    report["seconds"] = float(time.perf_counter() - tic)
    log.info("wrote %s: %d cells x %d genes, %d perturbations (%d held out, %d combinations) in %.1f s", out_path,
             adata.n_obs, adata.n_vars, len(perturbations), len(heldout), len(combinations), report["seconds"],
             extra=CONSOLE)
    return report


def prepare_from_files(h5ad, settings: dict, out_path, genes=None) -> None:
    """The prepare_screen job: ``prepare_screen`` with the gene list read from ``genes`` (a
    list file; None: the screen's own gene selection)."""
    prepare_screen(h5ad, settings, out_path, gene_list=read_gene_list(genes) if genes else None)
