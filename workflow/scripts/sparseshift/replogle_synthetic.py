"""Faithful stand-ins for the Replogle et al. 2022 inputs, for tests and benchmarks.

* :func:`write_legacy_h5ad` writes, with h5py, the on-disk layout of
  ``K562_gwps_raw_singlecell_01.h5ad`` (anndata 0.7, "legacy"): no root
  attributes; ``X`` a dense, uncompressed float32 dataset of integer counts
  (optionally CSR); ``obs``/``var`` groups with attributes ``encoding-type`` =
  ``dataframe``, ``encoding-version`` = ``0.1.0``, ``_index`` and
  ``column-order``; categorical columns stored as integer codes whose attribute
  ``categories`` is an HDF5 object reference to ``<df>/__categories/<col>``
  (which carries ``ordered``); string columns as variable-length UTF-8; empty
  ``uns``/``obsm``/``varm``/``layers`` groups. ``X`` is generated and written
  one row block at a time, so multi-GB files can be written in bounded memory.
* :func:`write_table_s3` writes a Table S3-like workbook: an unrelated first
  sheet, an expression-programs sheet and a perturbation-clusters sheet whose
  header sits below two title rows, with a member duplicated within a cluster
  and a perturbation listed in two clusters.

Counts are Poisson with a per-gene base rate, a per-cell library factor and a
per-perturbation log-fold change: every perturbation knocks down its own target
gene (CRISPRi) and shifts a few genes weakly; perturbations named in ``strong``
shift a quarter of all genes by about ±1.5 (log scale), so they are the ones a
distance-to-control ranking must find.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

CONTROL = "non-targeting"
_STR = h5py.string_dtype(encoding="utf-8")


def _codes_dtype(n_categories: int) -> np.dtype:
    """The smallest signed integer type pandas would pick for categorical codes."""
    for dt in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _write_column(group: h5py.Group, key: str, values) -> None:
    """One dataframe column as anndata 0.7 wrote it."""
    if isinstance(values, pd.Categorical):
        cats = values.categories.to_numpy()
        cat_key = f"__categories/{key}"
        if cats.dtype == object:
            group.create_dataset(cat_key, data=cats.astype(str).astype(object), dtype=_STR)
        else:
            group.create_dataset(cat_key, data=cats)
        group.create_dataset(key, data=values.codes.astype(_codes_dtype(len(cats))))
        group[key].attrs["categories"] = group[cat_key].ref
        group[cat_key].attrs["ordered"] = bool(values.ordered)
    else:
        arr = np.asarray(values)
        if arr.dtype.kind in "OUS":
            group.create_dataset(key, data=arr.astype(str).astype(object), dtype=_STR)
        else:
            group.create_dataset(key, data=arr)


def _write_dataframe(f: h5py.File, key: str, index_name: str, index, columns: dict) -> None:
    group = f.create_group(key)
    group.attrs["encoding-type"] = "dataframe"
    group.attrs["encoding-version"] = "0.1.0"
    group.attrs["column-order"] = np.array(list(columns), dtype=object)
    group.attrs["_index"] = index_name
    _write_column(group, index_name, np.asarray(index, dtype=object))
    for name, values in columns.items():
        _write_column(group, name, values)


def barcodes(n: int, gem_group: np.ndarray) -> np.ndarray:
    """Unique 16-letter barcodes (the cell's number in base 4) with a ``-<gem group>`` suffix."""
    digits = (np.arange(n, dtype=np.int64)[:, None] // (4 ** np.arange(16, dtype=np.int64))) % 4
    letters = np.array(list("ACGT"))[digits[:, ::-1]]
    core = np.ascontiguousarray(letters).view("<U16").ravel()
    return np.char.add(np.char.add(core, "-"), gem_group.astype(str)).astype(object)


def write_legacy_h5ad(
    path,
    n_cells: int,
    genes: Sequence[tuple[str, str]],
    perturbations: Sequence[str],
    *,
    controls: int,
    seed: int = 0,
    strong: Sequence[str] = (),
    chunk_rows: int = 4096,
    x_format: str = "dense",
    n_gem_groups: int = 4,
) -> dict:
    """Write a synthetic Replogle-schema h5ad in the anndata 0.7 legacy layout.

    Args:
        path: output file (overwritten).
        n_cells: number of cells, ``controls`` of them ``non-targeting``; the others are
            spread evenly over ``perturbations``; cell order is shuffled (seeded).
        genes: ``(ensembl_id, symbol)`` per column of ``X``; symbols may repeat (as
            TBCE and HSPA14 do in the real file).
        perturbations: targeted gene symbols (values of ``obs["gene"]``).
        controls: number of ``non-targeting`` cells.
        seed: seed of the single random generator.
        strong: perturbations with a strong, broad expression effect.
        chunk_rows: rows generated and written per block.
        x_format: ``"dense"`` (float32 dataset, as in the real file) or ``"csr"``.
        n_gem_groups: number of GEM groups (``obs["gem_group"]``).

    Returns:
        what was written: ``n_cells``, ``n_genes``, ``n_controls``, ``strong``,
        ``bytes`` (file size), ``perturbation_of_cell`` (``obs["gene"]`` as an array).
    """
    if x_format not in ("dense", "csr"):
        raise ValueError(f"x_format must be 'dense' or 'csr', not {x_format!r}")
    perturbations = list(perturbations)
    if CONTROL in perturbations:
        raise ValueError(f"{CONTROL!r} is added through `controls`, not `perturbations`")
    if not 0 <= controls <= n_cells or (controls < n_cells and not perturbations):
        raise ValueError("need 0 <= controls <= n_cells, and perturbations for the other cells")
    unknown = sorted(set(strong) - set(perturbations))
    if unknown:
        raise ValueError(f"strong perturbations not in `perturbations`: {unknown}")
    rng = np.random.default_rng(seed)
    n_genes = len(genes)
    ens = [g[0] for g in genes]
    sym = [g[1] for g in genes]

    # -------------------------------------------------------------- cell labels
    treated = [perturbations[i % len(perturbations)] for i in range(n_cells - controls)]
    labels = np.array([CONTROL] * controls + treated, dtype=object)
    labels = labels[rng.permutation(n_cells)]
    names = [CONTROL, *perturbations]
    label_index = pd.Index(names).get_indexer(labels)  # 0 = control
    gem = rng.integers(1, n_gem_groups + 1, size=n_cells)
    lib = rng.lognormal(0.0, 0.3, size=n_cells)

    # -------------------------------------------------------------- rates
    base = rng.lognormal(math.log(0.4), 1.0, size=n_genes)
    shifts = np.zeros((len(names), n_genes), dtype=np.float32)
    sym_pos: dict[str, list[int]] = {}
    for j, s in enumerate(sym):
        sym_pos.setdefault(s, []).append(j)
    strong_set = set(strong)
    for k, p in enumerate(names[1:], start=1):
        if p in strong_set:
            hit = rng.choice(n_genes, size=max(1, n_genes // 4), replace=False)
            shifts[k, hit] = rng.choice([-1.0, 1.0], size=len(hit)) * rng.normal(1.5, 0.2, size=len(hit))
        else:
            hit = rng.choice(n_genes, size=min(3, n_genes), replace=False)
            shifts[k, hit] = rng.normal(0.0, 0.2, size=len(hit))
        for j in sym_pos.get(p, []):
            shifts[k, j] = math.log(0.15)  # CRISPRi knock-down of the target itself
    fold = np.exp(shifts)

    # -------------------------------------------------------------- X
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    umi = np.empty(n_cells, dtype=np.float64)
    with h5py.File(path, "w") as f:
        if x_format == "dense":
            x = f.create_dataset("X", shape=(n_cells, n_genes), dtype=np.float32)  # contiguous, uncompressed
        else:
            grp = f.create_group("X")
            grp.attrs["encoding-type"] = "csr_matrix"
            grp.attrs["encoding-version"] = "0.1.0"
            grp.attrs["shape"] = np.array([n_cells, n_genes])
            grp.attrs["h5sparse_format"] = "csr"
            grp.attrs["h5sparse_shape"] = np.array([n_cells, n_genes])
            growable = {"shape": (0,), "maxshape": (None,), "chunks": (1 << 16,)}
            data = grp.create_dataset("data", dtype=np.float32, **growable)
            indices = grp.create_dataset("indices", dtype=np.int64, **growable)
            indptr = np.zeros(n_cells + 1, dtype=np.int64)
        chunk_rows = max(1, int(chunk_rows))
        for start in range(0, n_cells, chunk_rows):
            stop = min(start + chunk_rows, n_cells)
            rates = fold[label_index[start:stop]] * base[None, :] * lib[start:stop, None]
            counts = rng.poisson(rates).astype(np.float32)
            del rates
            umi[start:stop] = counts.sum(axis=1, dtype=np.float64)
            if x_format == "dense":
                x[start:stop] = counts
            else:
                r, c = np.nonzero(counts)
                nnz0 = data.shape[0]
                data.resize((nnz0 + len(r),))
                indices.resize((nnz0 + len(r),))
                data[nnz0:] = counts[r, c]
                indices[nnz0:] = c
                indptr[start + 1 : stop + 1] = nnz0 + np.cumsum(np.bincount(r, minlength=stop - start))
        if x_format == "csr":
            grp.create_dataset("indptr", data=indptr)

        # ---------------------------------------------------------- obs
        ens_of = dict(zip(sym, ens))  # targets that are not measured get a made-up id
        id_of = {p: ens_of.get(p, f"ENSG9{k:010d}") for k, p in enumerate(perturbations)}
        id_of[CONTROL] = CONTROL
        gene_id = np.array([id_of[g] for g in labels], dtype=object)
        guide_no = rng.integers(1, 3, n_cells).astype(str)
        guide = np.char.add(np.char.add(labels.astype(str), "_sg"), guide_no)
        z_umi = (umi - umi.mean()) / max(umi.std(), 1e-9)
        _write_dataframe(
            f, "obs", "cell_barcode", barcodes(n_cells, gem),
            {
                "gem_group": pd.Categorical(gem),
                "gene": pd.Categorical(labels.astype(str)),
                "gene_id": gene_id,
                "sgID_AB": pd.Categorical(guide),
                "mitopercent": rng.uniform(0.01, 0.15, size=n_cells),
                "UMI_count": umi,
                "z_gemgroup_UMI": z_umi,
            },
        )
        # ---------------------------------------------------------- var
        _write_dataframe(
            f, "var", "gene_id", ens,
            {
                "gene_name": np.array(sym, dtype=object),
                "chr": pd.Categorical(np.array([f"chr{1 + j % 22}" for j in range(n_genes)])),
                "mean": (base * 1.0).astype(np.float64),
            },
        )
        for key in ("uns", "obsm", "varm", "layers"):
            f.create_group(key)
    return {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_controls": controls,
        "strong": list(strong),
        "bytes": path.stat().st_size,
        "perturbation_of_cell": labels.astype(str),
    }


def write_table_s3(
    path,
    clusters: dict[str, list[str]],
    programs: dict[str, list[str]],
    *,
    duplicate_member: bool = True,
    cross_listed: bool = True,
) -> dict[str, list[str]]:
    """Write a Table S3-like workbook; return the clusters a correct parser must read.

    Sheets, in order: ``README`` (unrelated text), ``expression programs``
    (columns ``program_id``, ``manual_annotation``, ``members``, ``n_members``, header
    on the first row) and ``perturbation clusters`` (two title rows, then columns
    ``cluster_id``, ``best_description``, ``members``, ``n_members``). Members are
    written comma-separated with irregular spacing.

    With ``duplicate_member`` the first member of the first cluster is written twice in
    that cluster; with ``cross_listed`` it is also appended to the last cluster (a
    perturbation listed in two clusters). The returned mapping (description → unique
    members in order) includes that cross-listing.
    """
    clusters = {d: list(m) for d, m in clusters.items()}
    written = {d: list(m) for d, m in clusters.items()}
    descs = list(clusters)
    if descs and clusters[descs[0]]:
        first = clusters[descs[0]][0]
        if duplicate_member:
            written[descs[0]].append(f" {first} ")
        if cross_listed and len(descs) > 1 and first not in clusters[descs[-1]]:
            written[descs[-1]].append(first)
            clusters[descs[-1]].append(first)

    def joined(members):  # irregular spacing: "A, B,C,D"
        head, tail = members[: len(members) // 2], members[len(members) // 2 :]
        return ", ".join(head) + ("," if head else "") + ",".join(tail)

    readme = pd.DataFrame({"Supplementary Table S3": [
        "Perturbation clusters and expression programs (synthetic stand-in).",
        "Sheet 'perturbation clusters': one row per cluster.",
        "Sheet 'expression programs': one row per program.",
    ]})
    prog = pd.DataFrame({
        "program_id": np.arange(len(programs)),
        "manual_annotation": list(programs),
        "members": [joined(m) for m in programs.values()],
        "n_members": [len(m) for m in programs.values()],
    })
    clus = pd.DataFrame({
        "cluster_id": np.arange(len(written)),
        "best_description": list(written),
        "members": [joined(m) for m in written.values()],
        "n_members": [len(m) for m in written.values()],
    })
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        readme.to_excel(writer, sheet_name="README", index=False)
        prog.to_excel(writer, sheet_name="expression programs", index=False)
        clus.to_excel(writer, sheet_name="perturbation clusters", index=False, startrow=2)
        ws = writer.sheets["perturbation clusters"]
        ws["A1"] = "Table S3B. Perturbation clusters"
        ws["A2"] = "Clusters of genetic perturbations with similar transcriptional phenotypes"
    return {d: list(dict.fromkeys(m)) for d, m in clusters.items()}


def synthetic_genes(n_genes: int, *, duplicated: Sequence[str] = ("TBCE", "HSPA14")) -> list[tuple[str, str]]:
    """``n_genes`` (Ensembl id, symbol) pairs with symbols ``G00000``…; each symbol in
    ``duplicated`` appears twice, on two Ensembl ids (the first ones of the list)."""
    out: list[tuple[str, str]] = []
    for s in duplicated:
        out += [(f"ENSG{len(out):011d}", s), (f"ENSG{len(out) + 1:011d}", s)]
    while len(out) < n_genes:
        out.append((f"ENSG{len(out):011d}", f"G{len(out):05d}"))
    return out[:n_genes]
