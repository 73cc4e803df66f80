"""Training and transfer times of a finished (or partly finished) pipeline run, from what the
workflow records: Snakemake's ``benchmark:`` files (wall seconds, peak RSS, CPU seconds of the
job) and each run's ``train_info.json`` / ``history.tsv``.

Usage:
    python docs/scripts/run_times.py [results/paper]

Prints one row per training job (a stack of seeds or of replicates, or one model) with its
wall time, the models it trained and the wall seconds per model, then the transfer jobs
(steps 2 and 3 and the IWELBO of one run) summarised per method.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def training_jobs(root: Path) -> pd.DataFrame:
    rows = []
    for bench in sorted((root / "logs" / "train").rglob("*.benchmark.tsv")):
        b = pd.read_csv(bench, sep="\t").iloc[-1]
        setting = bench.name.removesuffix(".benchmark.tsv")
        stacked = bench.parent.parent.name == "stacked"
        method = bench.parent.name
        # the stack's size from a member's train_info.json (1 for a one-model job)
        members = sorted(root.glob(f"simulation/*/seed*/{method}/{setting.removesuffix('_replicates')}/"
                                   f"{'replicate*/' if setting.endswith('_replicates') else ''}train_info.json"))
        n = json.loads(members[0].read_text()).get("stacked_models", 1) if (stacked and members) else 1
        rows.append({"method": method, "setting": setting, "models": n, "wall_s": b["s"],
                     "s_per_model": b["s"] / n, "cpu_s": b["cpu_time"], "max_rss_mb": b["max_rss"]})
    return pd.DataFrame(rows)


def transfer_jobs(root: Path) -> pd.DataFrame:
    rows = []
    for bench in sorted((root / "logs" / "transfer").rglob("*.benchmark.tsv")):
        b = pd.read_csv(bench, sep="\t").iloc[-1]
        rows.append({"method": bench.parent.name, "wall_s": b["s"], "cpu_s": b["cpu_time"], "max_rss_mb": b["max_rss"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.groupby("method").agg(jobs=("wall_s", "size"), wall_s_median=("wall_s", "median"),
                                    wall_s_min=("wall_s", "min"), wall_s_max=("wall_s", "max"),
                                    max_rss_mb=("max_rss_mb", "max")).reset_index()


def main(argv=None) -> None:
    root = Path((argv or sys.argv[1:] or ["results/paper"])[0])
    pd.set_option("display.width", 200)
    train = training_jobs(root)
    print(f"training jobs in {root}: {len(train)}")
    if not train.empty:
        print(train.round(1).to_string(index=False))
        print(f"total: {train['wall_s'].sum():.0f} s wall, {train['cpu_s'].sum():.0f} s CPU for {train['models'].sum()} models")
    transfer = transfer_jobs(root)
    print(f"\ntransfer jobs in {root}: {int(transfer['jobs'].sum()) if not transfer.empty else 0}")
    if not transfer.empty:
        print(transfer.round(1).to_string(index=False))
        total = (transfer["jobs"] * transfer["wall_s_median"]).sum()
        print(f"jobs x median wall: {total:.0f} s")


if __name__ == "__main__":
    main()
