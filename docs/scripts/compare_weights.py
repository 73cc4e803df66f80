"""Compare the trained runs of two results folders bit for bit: weights, latents and history.

    python docs/scripts/compare_weights.py results_before results_after

Every run under AFTER (a folder with a ``model.pt``) is compared with the run at the same place
under BEFORE: every tensor of the weights (``torch.equal``), the posterior means of
``latents.npz`` (``numpy.array_equal``) and the training history but its timing columns. Prints
one line per run; exits 1 when anything differs or a run is missing from BEFORE. Used to show
that a change of code leaves the CPU path exactly as it was (AFTER may hold a few runs re-trained
with the new code, BEFORE the whole grid).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow" / "scripts"))
from sparseshift.data import load_latents  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_metrics import volatile  # noqa: E402  # timings: expected to differ


def compare(before: Path, after: Path) -> list[str]:
    """What differs between two runs' folders (empty: nothing)."""
    problems = []
    a, b = (torch.load(run / "model.pt", map_location="cpu", weights_only=True) for run in (before, after))
    if a.keys() != b.keys():
        problems.append(f"weights: other tensors ({sorted(a.keys() ^ b.keys())})")
    problems += [f"weights: {k}" for k in sorted(a.keys() & b.keys()) if not torch.equal(a[k], b[k])]
    if not np.array_equal(load_latents(before / "latents.npz"), load_latents(after / "latents.npz")):
        problems.append("latents")
    ha, hb = (pd.read_csv(run / "history.tsv", sep="\t") for run in (before, after))
    columns = [c for c in ha.columns if not volatile(c)]
    if list(hb.columns) != list(ha.columns) or not ha[columns].equals(hb[columns]):
        problems.append("history")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    runs = sorted(p.parent for p in args.after.rglob("model.pt") if "transfer" not in p.parts)
    if not runs:
        print(f"no trained run (model.pt) under {args.after}")
        return 1
    failed = 0
    for run in runs:
        twin = args.before / run.relative_to(args.after)
        problems = compare(twin, run) if (twin / "model.pt").exists() else [f"missing from {args.before}"]
        failed += bool(problems)
        print(f"{run.relative_to(args.after)}: {'identical' if not problems else 'DIFFERS: ' + ', '.join(problems)}")
    print(f"{len(runs) - failed} of {len(runs)} runs identical")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
