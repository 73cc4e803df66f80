"""Every command quoted in README.md and docs/*.md runs at HEAD, as far as a file can tell.

A quoted command that runs a file of the repository (``python path/x.py``, ``bash path/x.sh``,
``python -m sparseshift.x``) must name a file or module that exists, and every ``--flag``
given to it on the same command line must be defined by that script (present in its source
as ``"--flag"``, or for a shell script anywhere in its text). Commands are read from fenced
code blocks (continuation lines joined) and from inline code spans. The benchmarks' former
modules must not be named anywhere in docs/.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workflow" / "scripts"
REMOVED = ["sparseshift.benchmark", "sparseshift.benchmark_iwelbo", "sparseshift.benchmark_preprocess",
           "sparseshift.replogle_synthetic"]

# `python [-X ...] target args`, `bash target args`; the command ends at a shell separator,
# a comment, a redirection or a closing quote.
RUNNER = re.compile(r"(?<![\w./-])(?:python3?|bash)\s+(-m\s+)?([^\s;&|<>\"'`)]+)([^;&|#<>\"'`]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-zA-Z][\w-]*)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every code block line (continuations joined) and inline span."""
    out, in_block, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if in_block:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, pending + line))
            pending = ""
        else:
            out.extend((number, span) for span in re.findall(r"`([^`]+)`", line))
    return out


def module_source(name: str) -> Path | None:
    base = PACKAGE.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def problems(path: Path) -> list[str]:
    found = []
    for number, line in command_lines(path.read_text()):
        for match in RUNNER.finditer(line):
            module, target, rest = match.groups()
            where = f"{path.relative_to(ROOT)}:{number}: {match.group(0).strip()}"
            if module:
                if not target.startswith("sparseshift"):
                    continue  # another package's module (pytest, ...)
                source = module_source(target)
                if source is None:
                    found.append(f"{where}: no module {target} in workflow/scripts")
                    continue
            else:
                if target.startswith(("-", "/", "$", "~")) or not target.endswith((".py", ".sh")):
                    continue  # `python -c`, `python -`, a file outside the repository
                source = ROOT / target
                if not source.is_file():
                    found.append(f"{where}: no file {target}")
                    continue
            text = source.read_text()
            for flag in FLAG.findall(rest):
                defined = flag in text if source.suffix == ".sh" else re.search(rf"[\"']{flag}[\"']", text)
                if not defined:
                    found.append(f"{where}: {target} defines no {flag}")
    return found


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_commands_name_existing_scripts_and_flags(path):
    assert problems(path) == []


def test_the_check_reads_commands_and_finds_broken_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "train.py").write_text('ap.add_argument("--threads")\n')
    doc = tmp_path / "doc.md"
    doc.write_text("Run `python benchmarks/train.py --threads 1 --epochs 6`, then\n\n```bash\n"
                   "python benchmarks/gone.py --x 1 &&\n"
                   "/usr/bin/time -v python benchmarks/train.py \\\n  --threads 2 --batch  # --ignored\n"
                   "python -m sparseshift.no_such_module\npython -m pytest -q --nope\n```\n")
    found = problems(doc)
    assert len(found) == 4, found
    assert "defines no --epochs" in found[0] and "doc.md:1" in found[0]
    assert "no file benchmarks/gone.py" in found[1]
    assert "defines no --batch" in found[2] and "--ignored" not in found[2]
    assert "no module sparseshift.no_such_module" in found[3]


def test_docs_name_no_removed_module():
    for path in (ROOT / "docs").rglob("*"):
        if path.is_file() and path.suffix in {".md", ".py", ".sh", ".txt"}:
            text = path.read_text()
            for name in REMOVED:
                assert not re.search(rf"{re.escape(name)}(?![\w])", text), f"{path}: names {name}"
