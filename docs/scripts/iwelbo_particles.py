"""The held-out I-NLL against the IWELBO's particle count, and its Monte Carlo spread.

    python docs/scripts/iwelbo_particles.py RESULTS [RESULTS ...] [--particles 1000 5000] [--draws 2]
        [--tsv results/ablations/iwelbo_particles.tsv]

For every run of the simulation arm under RESULTS (``simulation/<sim>/seed<k>/<method>/<run>``
with ``transfer/finetuned.pt``, step 3's model, and ``transfer/heldout.json``), the I-NLL of the
held-out cells (−IWELBO per cell, exactly as the transfer computes it: ``heldout.HeldOut``)
with T particles for each T of ``--particles``, ``--draws`` times: draw 0 seeds the particles
with the run's seed, as the transfer does, so at the transfer's own T it must reproduce the
I-NLL in ``heldout.json`` exactly (the column ``reproduced``); draw k seeds them with seed + k.

Prints and writes (``--tsv``, read by ``docs/scripts/write_table1.py`` for its deviation table)
one row per run and T (the mean I-NLL over the draws, their spread), then prints per method the
mean change of the I-NLL from the smallest T to the largest. The paper uses 5,000 particles,
the released code (Genentech/sVAE) 1,000.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow" / "scripts"))
from sparseshift.data import RunData  # noqa: E402
from sparseshift.methods import DISPLAY_NAMES  # noqa: E402
from sparseshift.model import SparseShiftVAE  # noqa: E402
from sparseshift.heldout import HeldOut, TransferConfig  # noqa: E402


def runs(results: Path):
    """(run folder, its metrics) of every run under ``results`` with a step-3 model."""
    for model in sorted(results.glob("simulation/*/seed*/*/*/transfer/finetuned.pt")):
        folder = model.parents[1]
        yield folder, json.loads((folder / "metrics.json").read_text())


def inll(data: RunData, model: SparseShiftVAE, seed: int, particles: int) -> float:
    """−IWELBO per held-out cell with ``particles`` particles seeded by ``seed``."""
    held = HeldOut(data, seed, TransferConfig(particles=particles))
    held.iwelbo("iwelbo", model)
    return -float(held.scores["iwelbo"].cpu().numpy().astype(np.float64).mean())  # as HeldOut.result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--particles", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tsv", type=Path, default=Path(__file__).resolve().parents[2] / "results" / "ablations"
                    / "iwelbo_particles.tsv")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, datasets = [], {}  # (dataset, seed) -> RunData: the methods of a seed share its dataset
    for results in args.results:
        for folder, metrics in runs(results):
            seed = int(metrics["seed"])
            data_path = folder.parents[1] / "data.h5ad"
            if (data_path, seed) not in datasets:
                datasets[data_path, seed] = RunData(ad.read_h5ad(data_path), 0.1, seed, torch.device("cpu"),
                                                    str(data_path))
            data = datasets[data_path, seed]
            transfer = folder / "transfer"
            model = SparseShiftVAE.load(transfer / "finetuned.pt", transfer / "finetuned.json")
            recorded = json.loads((transfer / "heldout.json").read_text())
            for particles in args.particles:
                values = [inll(data, model, seed + k, particles) for k in range(args.draws)]
                row = {"run": str(folder), "method": metrics["method"], "seed": seed, "particles": particles,
                       "inll": float(np.mean(values)), "draw_spread": float(np.ptp(values)),
                       "draws": " / ".join(f"{v:.3f}" for v in values)}
                # None: the transfer used another particle count
                row["reproduced"] = values[0] == recorded["inll"] if particles == recorded["n_particles"] else None
                if not rows:
                    print("\t".join(row), flush=True)
                rows.append(row)
                print("\t".join(str(v) for v in row.values()), flush=True)
    df = pd.DataFrame(rows)
    args.tsv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.tsv, sep="\t", index=False)
    low, high = min(args.particles), max(args.particles)
    wide = df.pivot_table(index=["method", "run"], columns="particles", values="inll")
    change = (wide[high] - wide[low]).groupby(level="method")
    print(f"\n| method | runs | I-NLL, T = {low:,} | I-NLL, T = {high:,} | change (T = {high:,} − {low:,}) | "
          "largest spread between draws |")
    print("|---|---|---|---|---|---|")
    means = wide.groupby(level="method").mean()
    spread = df.groupby("method")["draw_spread"].max()
    for method, diff in change:
        print(f"| {DISPLAY_NAMES[method]} | {len(diff)} | {means.loc[method, low]:.2f} | {means.loc[method, high]:.2f} | "
              f"{diff.mean():+.3f} (runs: {', '.join(f'{v:+.3f}' for v in diff)}) | {spread[method]:.3f} |")
    checked = df["reproduced"].dropna()
    print(f"\nthe transfer's own I-NLL reproduced exactly by draw 0: {int(checked.sum())} of {len(checked)} runs")


if __name__ == "__main__":
    main()
