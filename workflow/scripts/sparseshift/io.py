"""Atomic writes and input checks shared by the rule scripts.

Every writer goes through :func:`atomic_path`: the content is written to a
temporary file beside the target and renamed over it only once complete, so a
killed job never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """A user-facing problem with an input file: names the file, the field and what was expected."""

    def __init__(self, path, field: str, expected: str, found: str | None = None):
        msg = f"{path}: field '{field}' — expected {expected}"
        if found is not None:
            msg += f", found {found}"
        super().__init__(msg)


def code_version() -> str:
    """The commit of the repository this package lives in, ``+modified`` when its
    ``workflow/`` or ``config/`` differ from that commit; ``unknown`` outside git.

    Recorded with every trained run, transfer and evaluation, so that a table written
    from ``results/`` can name the code that produced it.
    """
    root = Path(__file__).resolve().parents[3]  # workflow/scripts/sparseshift/io.py

    def git(*args) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        modified = git("status", "--porcelain", "--", "workflow", "config")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+modified" if modified else "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_tsv(df, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="")


def write_h5ad(adata, path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ``log.info(..., extra=CONSOLE)``: a line for the console as well as the log (a job's start and
# finish), when the console does not get every line (:func:`configure_logging`).
CONSOLE = {"console": True}


class _ConsoleFilter(logging.Filter):
    """Warnings, errors and the lines logged with ``extra=CONSOLE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "console", False)


def configure_logging(log_path: str | os.PathLike | None, verbose: bool = True) -> None:
    """Send this process's logging (INFO and above) to a rule's log file and to the console;
    without ``verbose`` the console gets only warnings, errors and the ``CONSOLE`` lines.

    An uncaught exception is logged with its traceback (in the log file; on the console when
    there is no log file), so that a failing job's log ends with its error.
    """
    console = logging.StreamHandler()
    if not verbose:
        console.addFilter(_ConsoleFilter())
    handlers: list[logging.Handler] = [console]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )

    def log_uncaught(kind, error, traceback):
        if log_path:  # the rule's log gets it; Snakemake names the log and shows it (show-failed-logs)
            console.setLevel(logging.CRITICAL + 1)
        logging.getLogger("sparseshift").error("the job failed:", exc_info=(kind, error, traceback))

    sys.excepthook = log_uncaught


def setup_rule(snakemake) -> None:
    """The start of every rule script: check that the ``sparseshift`` imported is the one of the
    workflow the script belongs to (not an installed copy of another checkout), then
    :func:`configure_logging` to the rule's log, the console getting every line only with
    the config key ``verbose``."""
    own = Path(snakemake.scriptdir).resolve() / "sparseshift"
    here = Path(__file__).resolve().parent
    if here != own:
        raise ImportError(
            f"this workflow's rule scripts must run its own sparseshift package ({own}), but Python "
            f"imported another copy ({here}); uninstall that copy or put {own.parent} first on PYTHONPATH"
        )
    configure_logging(snakemake.log[0] if snakemake.log else None, bool(snakemake.config.get("verbose", False)))


def job_runs(snakemake):
    """Whether a training or transfer job is a stack, and the function that turns one of its
    input, output or params entries into a list with one item per run: a stacked rule's
    entries are already lists (its ``params.train`` has one entry per run), a one-model rule's
    are single values."""
    stacked = isinstance(snakemake.params.train, list)

    def runs(value) -> list:
        return list(value) if stacked else [value]

    return stacked, runs


def read_dataset(path):
    """Read a dataset h5ad, turning a missing or unreadable file into an InputError."""
    import anndata

    try:
        return anndata.read_h5ad(path)
    except (OSError, KeyError) as err:
        raise InputError(path, "(file)", "a readable .h5ad file", str(err)) from err
