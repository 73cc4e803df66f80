"""Markdown for the paper tables: tables from data frames, mean ± sd cells, and the named blocks
``<!-- NAME -->`` ... ``<!-- /NAME -->`` of a file that other commands own.

docs/table1.md is the paper tables' document (``snakemake paper_tables``, copied by
``snakemake docs_table1``); the sections of runs made another way
(``docs/scripts/write_generalisation.py``, ``docs/scripts/ablations.py paired``) sit in named
blocks, which each command replaces (:func:`replace`) and a rewrite of the file keeps (:func:`kept`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .io import atomic_path

BLOCK = re.compile(r"<!-- ([\w-]+) -->.*?<!-- /\1 -->", re.S)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def replace(path: Path, name: str, body: str) -> None:
    """Write ``body`` as block ``name`` of ``path``: in place of the old block, else appended."""
    begin, end = markers(name)
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def kept(text: str) -> list[str]:
    """Every named block of ``text``, in order (what a rewrite of the file keeps)."""
    return [m.group(0) for m in BLOCK.finditer(text)]


def with_blocks(text: str, blocks: list[str]) -> str:
    """``text`` followed by ``blocks`` (:func:`kept` of the file it replaces), each set apart."""
    return "\n".join([text, *(line for block in blocks for line in ("", block, ""))])


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(nothing to show yet: no finished run for this table)"

    def cell(value) -> str:  # a pipe inside a cell would end it: escaped, once
        return str(value).replace("\\|", "|").replace("|", "\\|")

    head = "| " + " | ".join(map(cell, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def mean_sd(values: pd.Series, decimals: int) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.{decimals}f}"
    return f"{values.mean():.{decimals}f} ± {values.std(ddof=1):.{decimals}f}"


def copy_with_blocks(source: Path, target: Path) -> None:
    """The rule ``docs_table1``: ``target`` becomes ``source`` followed by the named blocks of
    ``target`` (:func:`kept`)."""
    target = Path(target)
    blocks = kept(target.read_text()) if target.exists() else []
    with atomic_path(target) as path:
        path.write_text(with_blocks(Path(source).read_text(), blocks))
