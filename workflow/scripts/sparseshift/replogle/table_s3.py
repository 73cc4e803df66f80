"""Replogle's Table S3 (an .xlsx workbook): its perturbation clusters and expression programs,
and the cluster a fold of the configuration names.

The sheets are found by their columns, whatever their order and names, and a header row
may sit below title rows.
"""

from __future__ import annotations

import difflib
import logging
import re
import zipfile

import numpy as np
import pandas as pd

from ..io import InputError

log = logging.getLogger(__name__)

CLUSTER_COLUMNS = ("best_description", "members")
PROGRAM_COLUMNS = ("manual_annotation", "members")


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
