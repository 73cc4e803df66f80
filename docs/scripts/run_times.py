"""Training and transfer times of a finished (or partly finished) pipeline run, from what the
workflow records: Snakemake's ``benchmark:`` files (wall seconds, peak RSS, CPU seconds of the
job) and each run's ``train_info.json`` / ``history.tsv``.

Usage:
    python docs/scripts/run_times.py [results/paper]

Prints one row per training job (a stack, or one model) with the models and epochs it trained
(a stack's epochs: those of this job, less the ones it resumed from a checkpoint), its wall
time, wall seconds per model and CPU seconds per model-epoch, then the transfer jobs
(steps 2 and 3 and the IWELBO of one run) summarised per method.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd


# A stacked training job's log: its first run, the size of the stack, its epochs; and, when it
# resumed from a checkpoint, the epoch it resumed at.
STACK_START = re.compile(r"train (\S+) and (\d+) more \(stacked\): start, (\d+) epochs")
RESUMED = re.compile(r"resumed .* at epoch (\d+)")


def stacked_job(log: Path) -> tuple[str, int, int]:
    """(method, models, epochs trained by this job) of a stacked training job, from its log."""
    text = log.read_text()
    starts = list(STACK_START.finditer(text))
    if not starts:
        raise ValueError(f"{log}: no line 'train <run> and <n> more (stacked): start, <epochs> epochs'")
    run, more, epochs = starts[-1].groups()
    resumed = RESUMED.findall(text[starts[-1].end():])
    return Path(run).parent.name, int(more) + 1, int(epochs) - (int(resumed[-1]) if resumed else 0)


def training_jobs(root: Path) -> pd.DataFrame:
    rows = []
    for bench in sorted((root / "logs" / "train").rglob("*.benchmark.tsv")):
        b = pd.read_csv(bench, sep="\t").iloc[-1]
        setting = bench.name.removesuffix(".benchmark.tsv")
        if bench.parent.name == "stacked":  # logs/train/stacked/<job>: the stack's log says what it held
            method, n, epochs = stacked_job(bench.with_name(f"{setting}.log"))
        else:  # logs/train/<run>[/replicate<r>].benchmark.tsv: one model, trained in <run>[/replicate<r>]
            folder = root / bench.relative_to(root / "logs" / "train").with_name(setting)
            method, n = (folder.parent.parent if folder.name.startswith("replicate") else folder.parent).name, 1
            info = folder / "train_info.json"
            epochs = json.loads(info.read_text())["epochs_run"] if info.exists() else float("nan")
        rows.append({"method": method, "setting": setting, "models": n, "epochs": epochs, "wall_s": b["s"],
                     "s_per_model": b["s"] / n, "cpu_s": b["cpu_time"],
                     "cpu_s_per_model_epoch": b["cpu_time"] / (n * epochs), "max_rss_mb": b["max_rss"]})
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
        print(train.round({"wall_s": 1, "s_per_model": 1, "cpu_s": 1, "cpu_s_per_model_epoch": 3,
                           "max_rss_mb": 1}).to_string(index=False))
        print(f"total: {train['wall_s'].sum():.0f} s wall, {train['cpu_s'].sum():.0f} s CPU for {train['models'].sum()} models")
    transfer = transfer_jobs(root)
    print(f"\ntransfer jobs in {root}: {int(transfer['jobs'].sum()) if not transfer.empty else 0}")
    if not transfer.empty:
        print(transfer.round(1).to_string(index=False))
        total = (transfer["jobs"] * transfer["wall_s_median"]).sum()
        print(f"jobs x median wall: {total:.0f} s")


if __name__ == "__main__":
    main()
