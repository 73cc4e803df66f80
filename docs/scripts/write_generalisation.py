"""The generalisation section of docs/table1.md, written from a run's generalisation table.

Usage:
    python docs/scripts/write_generalisation.py results/generalisation --into docs/table1.md \
        [--verification results/verify_generalisation/verification.json]

Reads ``<RESULTS>/simulation/generalisation.tsv`` (written by the workflow's summarize rule,
``config/generalisation.yaml``) and ``summary.tsv`` beside it (the commits each run recorded),
and replaces the block between ``<!-- generalisation -->`` and ``<!-- /generalisation -->`` in
the ``--into`` file (appended when absent; without ``--into`` it is printed). Verdicts, seed by
seed: sVAE+ *wins* against a method when it is the better on every seed, *loses* when it is the
worse on every seed (with 5 seeds, a sign test's one-sided p = 1/32 either way), else *ties*.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow" / "scripts"))
from sparseshift import markdown  # noqa: E402
from sparseshift.methods import DISPLAY_NAMES  # noqa: E402
from sparseshift.paper_tables import verification_note  # noqa: E402
from sparseshift.summary import COMPARED  # noqa: E402

BEGIN, END = markdown.markers("generalisation")
NAMES = {**DISPLAY_NAMES, **{f"svae_plus - {m}": f"sVAE+ − {DISPLAY_NAMES[m]}" for m in COMPARED}}
METRICS = {
    "inll_zero_shot": "I-NLL of held-out combinations, zero-shot (summed learned shifts, nothing fitted)",
    "inll_combinations": "I-NLL of the same combinations after steps 2 and 3",
    "inll": "I-NLL of every held-out cell, full transfer (step 3 with held-out masks set to 1)",
    "inll_learned_masks": "I-NLL of every held-out cell, step 3 with the held-out masks learned",
    "graph_f1_zero_shot": "target F1 of the held-out combinations (union of the members' learned rows)",
    "graph_f1_heldout": "target F1 of the held-out perturbations, step 3 with masks set to 1",
    "graph_f1_heldout_learned": "target F1 of the held-out perturbations, step 3 with learned masks",
}


def verdict(better: str) -> str:
    n, m = (int(v) for v in re.fullmatch(r"(\d+) of (\d+)", better).groups())
    return "wins" if n == m else "loses" if n == 0 else "ties"


def describe(metric: str) -> str:
    k = re.fullmatch(r"inll_few_shot_k(\d+)", metric)
    return f"I-NLL of the other held-out cells, step 3 fitted on {k.group(1)} cells per condition" if k else METRICS[metric]


def section(results: Path, verification: Path | None = None) -> str:
    table = pd.read_csv(results / "simulation" / "generalisation.tsv", sep="\t")
    summary = pd.read_csv(results / "simulation" / "summary.tsv", sep="\t")
    commits = sorted({str(v) for c in ("train_code_version", "transfer_code_version", "code_version")
                      if c in summary for v in summary[c].dropna()})
    lines = [BEGIN, "## Generalisation: combinations zero-shot, few-shot transfer, targets of unseen perturbations", "",
             f"Written by `python docs/scripts/write_generalisation.py {results} --into docs/table1.md` on "
             f"{datetime.date.today()} ({platform.machine()}, {platform.system()}) from the workflow's "
             f"`{results}/simulation/generalisation.tsv` (`snakemake --cores all --configfile config/generalisation.yaml "
             f"-- simulation`: the paper setting with 30 combinations of two training perturbations, 15 held out, "
             f"{summary['seed'].nunique()} seeds, one setting per method, methods "
             f"{', '.join(NAMES[m] for m in NAMES if m in set(summary['method']))}, "
             f"{', '.join(str(int(n)) for n in sorted(summary['n_particles'].dropna().unique()))} particles). Code: {', '.join(f'`{c[:12]}{c[40:]}`' for c in commits)} "
             f"(recorded by every run's training, transfer and evaluation). Lower I-NLL is better, higher F1; a "
             f"difference is sVAE+ minus the other method on the same seed."
             + (f" {verification_note(verification)}" if verification else ""), ""]
    verdicts = []
    for metric, rows in table.groupby("metric", sort=False):
        lines += [f"**{describe(metric)}** (`{metric}`)", "", "| model | seeds | mean ± sd | per seed | sVAE+ better | verdict |",
                  "|---|---|---|---|---|---|"]
        for _, r in rows.iterrows():
            paired = isinstance(r["better_seeds"], str) and " of " in r["better_seeds"]
            v = verdict(r["better_seeds"]) if paired else ""
            if paired and r["mean"] == 0 and not r["sd"]:  # the same value on every seed
                v = "equal"
            if paired:
                verdicts.append((NAMES[r["method"]].split(" − ")[1], metric, v, r["mean"], r["better_seeds"]))
            sd = "" if pd.isna(r["sd"]) else f" ± {r['sd']:.3f}"
            mean = f"{r['mean']:+.3f}" if paired else f"{r['mean']:.3f}"
            lines.append(f"| {NAMES.get(r['method'], r['method'])} | {r['seeds']} | {mean}{sd} | {r['per_seed']} | "
                         f"{r['better_seeds'] if paired else ''} | {v} |")
        lines.append("")
    lines += ["**In short**, seed by seed:", ""]
    for other in ("iVAE", "sVAE"):
        mine = [v for v in verdicts if v[0] == other]
        for word in ("wins", "ties", "loses", "equal"):
            picked = [f"`{m}` ({d:+.3f}, better on {b})" for _, m, w, d, b in mine if w == word]
            if picked:
                lines.append(f"- against {other}, sVAE+ **{word}** on " + "; ".join(picked))
    return "\n".join(lines + ["", END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the results folder of config/generalisation.yaml")
    parser.add_argument("--into", type=Path, help="markdown file whose generalisation block is replaced")
    parser.add_argument("--verification", type=Path, help="verify_runs.py's report of a sample of these runs re-run")
    args = parser.parse_args()
    block = section(args.results, args.verification)
    if args.into is None:
        print(block)
    else:
        markdown.replace(args.into, "generalisation", block.removeprefix(BEGIN + "\n").removesuffix("\n" + END))

if __name__ == "__main__":
    main()
