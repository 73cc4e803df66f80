"""Conda environments pin the same versions as pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI ones
CONDA_TO_PYPI = {"pytorch": "torch"}


def pyproject_pins() -> dict[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + [d for extra in meta["optional-dependencies"].values() for d in extra]
    pins = {}
    for dep in deps:
        name, _, version = dep.partition("==")
        assert version, f"pyproject.toml: {dep!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def conda_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        if not isinstance(dep, str):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==?\s*([^\s=<>]+)", dep)
        assert m, f"{path.name}: {dep!r} is not pinned"
        name = m.group(1).lower()
        pins[CONDA_TO_PYPI.get(name, name)] = m.group(2)
    return pins


def test_every_env_matches_pyproject():
    pins = pyproject_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for path in envs:
        env = yaml.safe_load(path.read_text())
        assert "nodefaults" in env["channels"], path.name
        for name, version in conda_pins(path).items():
            if name == "python":
                continue
            assert name in pins, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert pins[name] == version, f"{path.name}: {name} {version} != pyproject {pins[name]}"


def test_every_rule_has_a_conda_env():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules = len(re.findall(r"^rule \w+:", text, flags=re.M))
        assert text.count("conda:") == n_rules, smk.name
