"""Compare the metrics.json files of two results folders, timings and code versions aside.

    python docs/scripts/compare_metrics.py results_before results_after

Prints every value that differs and a count; exits 1 when any does (or when the two folders
hold different runs). Used to show that a refactor leaves every number of a run unchanged.
"""

import argparse
import json
import math
import sys
from pathlib import Path

VERSIONS = {"code_version", "train_code_version", "transfer_code_version"}


def volatile(key: str) -> bool:
    """Timings and the commit of the code: expected to differ between two runs."""
    return key in VERSIONS or key.endswith("_seconds") or key == "seconds_per_epoch"


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    runs = [sorted(p.relative_to(d) for d in [folder] for p in d.rglob("metrics.json")) for folder in (args.before, args.after)]
    if runs[0] != runs[1]:
        print("the folders hold different runs:", sorted(set(runs[0]) ^ set(runs[1])))
        return 1
    differences = 0
    for rel in runs[0]:
        a, b = (json.loads((folder / rel).read_text()) for folder in (args.before, args.after))
        keys = {k for k in a if not volatile(k)} | {k for k in b if not volatile(k)}
        for key in sorted(keys):
            if not same(a.get(key, "<absent>"), b.get(key, "<absent>")):
                print(f"{rel}: {key}: {a.get(key, '<absent>')} != {b.get(key, '<absent>')}")
                differences += 1
    print(f"{len(runs[0])} metrics.json files compared, {differences} differences (timings and code versions aside)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
