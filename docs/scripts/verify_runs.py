"""Re-run a sample of a results folder's runs at HEAD and compare them with the recorded ones.

    python docs/scripts/verify_runs.py results/paper --configfile config/paper.yaml   # -> results/verify/

A table written from ``results/`` stays valid after a change of ``workflow/`` or ``config/`` only
with evidence that HEAD reproduces its runs. This takes the first stacked training job of every
method in the configuration (``--stacks`` of them; with ``stack_models: 1``, as many single runs),
re-runs it at HEAD through training, transfer and evaluation into ``--out`` (Snakemake, the same
configuration), then compares every run of those jobs with the recorded one: each weight tensor,
the latents and the history (``compare_weights.py``), and every metric of ``metrics.json`` but
timings and code versions (``compare_metrics.py``). It prints a line per run and a total, writes
``<out>/verification.json`` (HEAD, runs compared, runs identical) and exits 1 when a run differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_metrics import same, volatile  # noqa: E402
from compare_weights import compare  # noqa: E402
from snakemake.utils import update_config, validate  # noqa: E402
from sparseshift.layout import Layout  # noqa: E402
from sparseshift.plan import Plan, prepare  # noqa: E402


def load_config(configfiles: list[Path], results: Path) -> dict:
    """The configuration as the Snakefile reads it: the default file, then each given one."""
    config: dict = {}
    for path in [ROOT / "config" / "config.yaml", *configfiles]:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    config["results"] = str(results)
    prepare(config)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def sample(plan: Plan, stacks: int) -> list:
    """The members (runs and replicates) of the first ``stacks`` training jobs of each method."""
    jobs: dict[str, list] = {}
    for job, members in plan.stacks(transfer=False).items():
        jobs.setdefault(members[0].method, []).append(members)
    return [m for groups in jobs.values() for members in groups[:stacks] for m in members]


def metric_differences(before: Path, after: Path) -> list[str]:
    a, b = (json.loads(path.read_text()) for path in (before, after))
    return [key for key in sorted(set(a) | set(b)) if not volatile(key)
            and not same(a.get(key, "<absent>"), b.get(key, "<absent>"))]


def summary_differences(recorded: Path, member, metrics: Path) -> list[str]:
    """Where a run's folder was not kept, its row of the recorded ``<arm>/summary.tsv``: every
    metric of HEAD's ``metrics.json`` that the row has, timings and code versions aside (the
    weights cannot be compared: ``summary`` in the report's ``compared`` says so)."""
    table = recorded / member.arm / "summary.tsv"
    if not table.exists():
        return [f"not recorded in {recorded}"]
    df = pd.read_csv(table, sep="\t", float_precision="round_trip", keep_default_na=False, dtype=str)
    row = df[(df["simulation"] == member.dataset) & (df["method"] == member.method)
             & (df["seed"] == str(member.seed)) & (df["run"] == member.hp)]
    if len(row) != 1:
        return [f"{len(row)} rows for this run in {table}"]
    # a value metrics.json leaves empty (null) is an empty cell of summary.tsv
    new = {k: float("nan") if v is None else v for k, v in json.loads(metrics.read_text()).items()}
    return [f"metric {key}" for key in sorted(set(new) & set(row.columns))
            if not volatile(key) and not same(parse(row.iloc[0][key]), new[key])]


def parse(text: str):
    """A summary.tsv cell as the value metrics.json held (written by pandas: floats round-trip)."""
    if text in ("", "nan", "NaN"):
        return float("nan")
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recorded", type=Path, help="the results folder the table was written from")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[], help="its configuration files")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "verify",
                        help="where HEAD's runs go (write_table1.py reads its verification.json)")
    parser.add_argument("--stacks", type=int, default=1, help="training jobs re-run per method")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    recorded, out = args.recorded.resolve(), args.out.resolve()
    plan = Plan(load_config(args.configfile, out))
    runs = [m for m in sample(plan, args.stacks) if not m.replicate]
    layout = Layout(plan, ROOT / "workflow")
    targets = [layout.member(m, "metrics.json") for m in runs]
    configs = [str(p.resolve()) for p in args.configfile]
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--cores",
                    str(args.cores), "--directory", str(ROOT), "--configfile", str(ROOT / "config" / "config.yaml"),
                    *configs, "--config", f"results={out}", "--", *targets], check=True)
    identical, from_summary = 0, 0
    for member, target in zip(runs, targets):
        folder = Path(target).parent
        twin = recorded / folder.relative_to(out)
        if not (twin / "metrics.json").exists():
            from_summary += 1
            problems = summary_differences(recorded, member, folder / "metrics.json")
        else:
            problems = compare(twin, folder) + [f"metric {k}" for k in metric_differences(twin / "metrics.json",
                                                                                         folder / "metrics.json")]
        identical += not problems
        print(f"{folder.relative_to(out)}: {'identical' if not problems else 'DIFFERS: ' + ', '.join(problems)}")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    compared = "weights, latents, history, metrics" if not from_summary else (
        f"metrics only: {from_summary} of the runs' folders were not kept, only their summary.tsv rows")
    report = {"head": head, "recorded": str(recorded), "runs": len(runs), "identical": identical,
              "methods": sorted({m.method for m in runs}), "compared": compared}
    (out / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{identical} of {len(runs)} runs identical at HEAD {head[:12]} ({compared})")
    return int(identical < len(runs))


if __name__ == "__main__":
    sys.exit(main())
