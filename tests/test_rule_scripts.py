"""Rule scripts: they run the workflow's own sparseshift, and log to their rule's log."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from sparseshift import io

from test_workflow import REPO, TINY, snakemake

SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
GUARD = "sys.path.insert(0, snakemake.scriptdir)"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_rule_script_puts_its_own_package_first(script):
    """Snakemake appends workflow/scripts to sys.path, behind any installed sparseshift: each
    rule script puts it first before importing the package, then checks what it got."""
    tree = ast.parse(script.read_text())
    lines = [ast.get_source_segment(script.read_text(), node) for node in tree.body]
    guard = next(i for i, line in enumerate(lines) if line == GUARD)
    imports = [i for i, node in enumerate(tree.body) if isinstance(node, ast.ImportFrom)
               and node.module.split(".")[0] == "sparseshift"]
    assert imports and guard < min(imports)
    assert "io.setup_rule(snakemake)" in lines


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_rule_script_hands_its_job_to_one_package_function(script):
    """The README's rule for where a job's code lives: an adapter calls one function of the
    package (besides sparseshift.io's set-up and atomic writes), with Snakemake's files, params
    and threads; the job's work is in that function."""
    tree = ast.parse(script.read_text())
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                and node.module.split(".")[0] == "sparseshift" for alias in node.names} - {"io"}
    called = [node.func.id for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported]
    assert len(called) == 1, f"{script.name} calls {called} of the package"


def test_a_rule_script_runs_its_workflows_package_when_another_copy_is_installed(tmp_path):
    """Another sparseshift ahead on the path (as an installed or editable copy of another
    checkout is): the rule script still runs this workflow's package."""
    other = tmp_path / "other" / "sparseshift"
    other.mkdir(parents=True)
    marker = tmp_path / "other_copy_imported"
    (other / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = {**os.environ, "PYTHONPATH": str(other.parent)}
    shadowed = subprocess.run([sys.executable, "-c", "import sparseshift; print(sparseshift.__file__)"],
                              env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert shadowed.stdout.strip() == str(other / "__init__.py")  # the copy does shadow it
    marker.unlink()
    work = tmp_path / "work"
    target = "results/simulation/tiny/seed0/data.h5ad"
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile"), target,
           "--cores", "1", "--directory", str(work), "--configfile", str(TINY)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (work / target).exists() and not marker.exists()


def test_setup_rule_refuses_a_package_of_another_workflow(tmp_path):
    job = SimpleNamespace(scriptdir=str(tmp_path / "workflow" / "scripts"), log=[str(tmp_path / "job.log")],
                          config={})
    with pytest.raises(ImportError, match=r"must run its own sparseshift package .*workflow/scripts/sparseshift"):
        io.setup_rule(job)


def test_a_jobs_entries_become_one_item_per_run_whether_stacked_or_one_model():
    """A stacked rule's entries are lists already; a one-model rule's path or settings is one
    run's (a path must not become a list of its characters, settings a list of their keys)."""
    stacked, runs = io.job_runs(SimpleNamespace(params=SimpleNamespace(train=[{"epochs": 1}, {"epochs": 2}])))
    assert stacked and runs(("seed0/data.h5ad", "seed1/data.h5ad")) == ["seed0/data.h5ad", "seed1/data.h5ad"]
    stacked, runs = io.job_runs(SimpleNamespace(params=SimpleNamespace(train={"epochs": 1})))
    assert not stacked
    assert runs("seed0/data.h5ad") == ["seed0/data.h5ad"] and runs({"epochs": 1}) == [{"epochs": 1}]


@pytest.mark.parametrize("verbose", [False, True])
def test_setup_rule_gives_the_console_every_line_only_with_config_verbose(tmp_path, verbose):
    job = SimpleNamespace(scriptdir=str(REPO / "workflow" / "rules" / ".." / "scripts"), log=[str(tmp_path / "job.log")],
                          config={"verbose": verbose})
    try:
        io.setup_rule(job)
        console = next(h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler))
        assert bool(console.filters) != verbose
    finally:
        sys.excepthook = sys.__excepthook__
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)


def run_logged(tmp_path, verbose: bool, body: str):
    """A script that sets up logging as a rule script does, then runs ``body``."""
    code = textwrap.dedent(f"""
        import logging
        from sparseshift import io
        io.configure_logging({str(tmp_path / 'job.log')!r}, verbose={verbose})
        log = logging.getLogger("sparseshift.job")
    """) + textwrap.dedent(body)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return res, (tmp_path / "job.log").read_text()


def test_the_console_gets_start_finish_and_warnings_the_log_everything(tmp_path):
    body = """
        log.info("job: start", extra=io.CONSOLE)
        log.info("epoch 1/2 loss 1.0")
        log.warning("something odd")
        log.info("job: done", extra=io.CONSOLE)
    """
    res, logged = run_logged(tmp_path, False, body)
    assert res.returncode == 0
    for line in ("job: start", "epoch 1/2", "something odd", "job: done"):
        assert line in logged
    assert "job: start" in res.stderr and "something odd" in res.stderr and "job: done" in res.stderr
    assert "epoch 1/2" not in res.stderr
    res, _ = run_logged(tmp_path, True, body)  # config key verbose: every line
    assert "epoch 1/2" in res.stderr


def test_an_uncaught_exception_ends_the_log_of_its_job(tmp_path):
    res, logged = run_logged(tmp_path, False, """
        log.info("reading the input")
        raise io.InputError("data.h5ad", "X", "counts", "strings")
    """)
    assert res.returncode == 1
    assert logged.rstrip().splitlines()[-1] == (
        "sparseshift.io.InputError: data.h5ad: field 'X' — expected counts, found strings")
    assert "Traceback" in logged and "reading the input" in logged
    assert "InputError" not in res.stderr  # Snakemake names the log and shows it (show-failed-logs)
