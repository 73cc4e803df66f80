"""Conda environments pin the same versions as pyproject.toml."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI ones
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-gpu": "torch"}
# The training and transfer rules' environment, chosen from the config's device (common.smk)
MODEL_ENVS = ["../../envs/model.yaml", "../../envs/model-gpu.yaml"]


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
        n_rules = len(re.findall(r"^\s*rule(?: \w+)?:", text, flags=re.M))  # named or in a loop
        assert text.count("conda:") == n_rules, smk.name


# import name -> conda package, where they differ
IMPORT_TO_CONDA = {"torch": "pytorch", "sklearn": "scikit-learn", "yaml": "pyyaml"}
NOT_PACKAGES = {"sparseshift", "snakemake", "__future__"}


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (imports inside functions are left out)."""
    import ast

    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a sibling module of the package
                base = node.module or ""
                names |= {f"sparseshift.{base}".rstrip(".")} if base else {
                    f"sparseshift.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
                if node.module == "sparseshift":
                    names |= {f"sparseshift.{alias.name}" for alias in node.names}
    return names


def _packages_needed(script: Path) -> set[str]:
    """Third-party packages a rule script imports, following sparseshift's own modules."""
    package = REPO / "workflow" / "scripts" / "sparseshift"
    todo, seen, needed = [script], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _top_level_imports(path):
            top = name.split(".")[0]
            if name.startswith("sparseshift."):
                module = package / f"{name.split('.')[1]}.py"
                if module.exists():
                    todo.append(module)
            elif top not in NOT_PACKAGES and top not in sys.stdlib_module_names:
                needed.add(IMPORT_TO_CONDA.get(top, top))
    return needed


def test_every_rule_env_exists_and_has_what_its_script_imports():
    checked = 0
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        # named rules, and rules defined in a loop (``rule:`` with a ``name:``), indented or not
        for rule, body in re.findall(r"(?ms)^[ \t]*rule ?(\w*):\n(.*?)(?=^[ \t]*rule[ :]|\Z)", smk.read_text()):
            env = re.search(r'conda:\s*(?:"([^"]+)"|(MODEL_ENV))', body)
            script = (smk.parent / re.search(r'script:\s*"([^"]+)"', body).group(1)).resolve()
            for name in [env.group(1)] if env.group(1) else MODEL_ENVS:
                env_path = (smk.parent / name).resolve()
                assert env_path.exists(), f"rule {rule}: {name} does not exist"
                deps = yaml.safe_load(env_path.read_text())["dependencies"]
                have = {CONDA_TO_PYPI.get(n, n) for n in (re.split(r"[=<> ]", d)[0].lower() for d in deps
                                                          if isinstance(d, str))}
                missing = {CONDA_TO_PYPI.get(n, n) for n in _packages_needed(script)} - have
                assert not missing, f"rule {rule}: {env_path.name} lacks {sorted(missing)} that {script.name} imports"
            checked += 1
    assert checked >= 11
