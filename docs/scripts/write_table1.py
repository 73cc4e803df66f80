"""Write docs/table1.md from the pipeline's results, outside the workflow: the paper tables of
``sparseshift.paper_tables`` (the workflow writes the same with ``snakemake --cores all
paper_tables`` and copies them here with ``snakemake --cores 1 docs_table1``). Kept for results
in other folders, and for a paper run not finished yet: then its tables are built from the runs'
``metrics.json`` that exist.

Usage:
    python docs/scripts/write_table1.py [--paper results/paper] [--default results/default]
        [--ablations results/ablations/ablations.tsv] [--particles results/ablations/iwelbo_particles.tsv]
        [--out docs/table1.md]

The named blocks of ``--out`` (``<!-- NAME -->`` ... ``<!-- /NAME -->``, written by other
commands) are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from sparseshift.ablations import OUT  # noqa: E402
from sparseshift.markdown import kept  # noqa: E402
from sparseshift.paper_tables import document  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", type=Path, default=REPO / "results" / "paper")
    ap.add_argument("--default", type=Path, default=REPO / "results" / "default")
    ap.add_argument("--ablations", type=Path, default=OUT / "ablations.tsv")
    ap.add_argument("--ablation-runs", type=Path, default=OUT,
                    help="the ablations' results folder (their datasets and posterior means)")
    ap.add_argument("--particles", type=Path, default=OUT / "iwelbo_particles.tsv",
                    help="the I-NLL against the particle count (docs/scripts/iwelbo_particles.py)")
    ap.add_argument("--sign-flips", type=Path,
                    help="the signed F1 over the latents' sign choices (docs/scripts/sign_flips.py; "
                         "default: PAPER/simulation/sign_flips.tsv)")
    ap.add_argument("--simulation", default="paper", help="the paper configuration's Table 1 setting")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "table1.md")
    ap.add_argument("--verification", type=Path, default=REPO / "results" / "verify" / "verification.json",
                    help="verify_runs.py's report: the paper runs re-run at HEAD (when workflow/ changed since)")
    args = ap.parse_args(argv)
    paper_values = yaml.safe_load((REPO / "config" / "paper.yaml").read_text()).get("paper_table1", {})
    try:
        text, _ = document(args.paper, paper_values, args.default, args.ablations, args.particles, args.sign_flips,
                           args.verification, args.simulation, args.ablation_runs,
                           tuple(kept(args.out.read_text() if args.out.exists() else "")))
    except FileNotFoundError as err:
        sys.exit(str(err))
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
