"""What the finished trainings of a running grid say, before their transfers and evaluations.

    python docs/scripts/interim_metrics.py RESULTS [--simulation paper] [--min-variance 0.01]
        [--tsv RESULTS/simulation/interim_metrics.tsv]

A run's ``metrics.json`` waits for its transfer protocol (the held-out I-NLL), which on a CPU
comes hours after its training. This scores every trained run of simulation ``--simulation``
under RESULTS (``model.pt`` and ``latents.npz`` written) with the evaluation's own functions
(``runs.evaluate_run``: MCC, R², the three graph conventions; ``runs.udr_score`` over the run's
replicates; the number of informative latents, posterior-mean variance above ``--min-variance``,
as UDR counts them), then chooses per seed and method among the settings trained so far with the
summarize rule's ``summary.select`` (highest UDR). It prints the mean per setting and the
selected runs per method, and writes one row per run. Nothing here is the pipeline's output:
Table 1 comes from ``docs/scripts/write_table1.py`` once the workflow has finished, and a
setting still training is missing from the choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow" / "scripts"))
from sparseshift.data import load_latents  # noqa: E402
from sparseshift.io import read_dataset  # noqa: E402
from sparseshift.metrics import informative_latents  # noqa: E402
from sparseshift.model import SparseShiftVAE  # noqa: E402
from sparseshift.runs import evaluate_run, udr_score  # noqa: E402
from sparseshift.markdown import md_table  # noqa: E402
from sparseshift.paper_tables import block, method_rows  # noqa: E402
from sparseshift.summary import select  # noqa: E402

# column title -> (column, decimals)
TITLES = {"Pearson MCC": ("mcc_pearson", 3), "R²": ("r2", 3), "F1 \\|r\\| all": ("graph_f1_all", 3),
          "F1 signed": ("graph_f1_signed", 3), "mask density": ("mask_density", 3), "UDR": ("udr", 3),
          "informative latents": ("informative", 1)}
COLUMNS = [col for col, _ in TITLES.values()]


def score(results: Path, simulation: str, min_variance: float) -> pd.DataFrame:
    rows, datasets = [], {}
    for weights in sorted((results / "simulation" / simulation).glob("seed*/*/*/model.pt")):
        run = weights.parent
        if not (run / "latents.npz").exists():
            continue
        seed_dir = run.parents[1]
        if seed_dir not in datasets:
            datasets[seed_dir] = read_dataset(seed_dir / "data.h5ad")
        model = SparseShiftVAE.load(weights, run / "model.json")
        latents = load_latents(run / "latents.npz")
        row = {"simulation": simulation, "seed": int(seed_dir.name.removeprefix("seed")),
               "method": model.cfg.method, "n_latent": model.cfg.n_latent, "run": run.name,
               "evaluated": (run / "metrics.json").exists()}
        row.update(evaluate_run(datasets[seed_dir], model, latents))
        replicates = sorted(run.glob("replicate*/latents.npz"), key=lambda p: int(p.parent.name[9:]))  # 1, 2
        row.update(udr_score([latents] + [load_latents(path) for path in replicates], min_variance))
        row["informative"] = int(informative_latents(latents, min_variance).sum())  # UDR's active latents
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--simulation", default="paper")
    ap.add_argument("--min-variance", type=float, default=0.01, help="UDR's config key selection.min_variance")
    ap.add_argument("--tsv", type=Path)
    args = ap.parse_args(argv)
    df = score(args.results, args.simulation, args.min_variance)
    if df.empty:
        sys.exit(f"no trained run of simulation {args.simulation} under {args.results}")
    for col in COLUMNS:
        df[col] = df.get(col, np.nan)
    chosen = select(df)
    df = df.merge(chosen[["seed", "method", "run", "selected"]], on=["seed", "method", "run"])
    tsv = args.tsv or args.results / "simulation" / "interim_metrics.tsv"
    df.to_csv(tsv, sep="\t", index=False)
    print(f"{len(df)} trained runs of simulation {args.simulation} ({int(df['evaluated'].sum())} evaluated by the "
          f"workflow); wrote {tsv}\n\nMean ± sd over seeds per setting:\n")
    df = method_rows(df)
    print(md_table(block(df, ["method", "run"], columns=TITLES)))
    print("\nSelected per seed (highest UDR among the settings trained so far), mean ± sd over seeds:\n")
    print(md_table(block(df[df["selected"]], ["method"], columns=TITLES)))


if __name__ == "__main__":
    main()
