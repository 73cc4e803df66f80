"""Sections of a markdown file that other commands own: ``<!-- NAME -->`` ... ``<!-- /NAME -->``.

docs/table1.md is written by ``write_table1.py`` from the paper run and the ablations; the
sections of runs made another way (``write_generalisation.py``, ``ablations.py paired``) sit in
named blocks, which each command replaces and ``write_table1.py`` keeps.
"""

from __future__ import annotations

import re
from pathlib import Path

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
