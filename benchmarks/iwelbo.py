"""IWELBO benchmark: wall time of the held-out IWELBO on the paper simulation.

Usage (prints the machine and a TSV table)::

    python benchmarks/iwelbo.py --threads 2 --particles 1000 5000

The paper simulation (p = 15, 100 perturbations x 250 cells, 100 genes) holds out
20 perturbations: 5,000 cells. An sVAE+ model is trained for a few epochs (the
weights do not change the cost) and its IWELBO over all held-out cells is timed
for each particle count, as the transfer rule computes it. Peak resident memory
of the process is printed with each row.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift, not an installed copy

from sparseshift.model import ModelConfig  # noqa: E402
from sparseshift.data import RunData  # noqa: E402
from sparseshift.runs import train_runs  # noqa: E402
from sparseshift.simulate import SimulationConfig, simulate  # noqa: E402
from sparseshift.train import TrainConfig, select_device  # noqa: E402

from machine import machine_line  # noqa: E402  # benchmarks/machine.py, next to this script


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--particles", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--memory-mb", type=float, default=64.0, help="block size of the IWELBO (MB)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train-epochs", type=int, default=3)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    adata = simulate(
        SimulationConfig(library_size=1e6, softmax_over="cells", seed=0)  # config/paper.yaml
    )
    model_cfg = ModelConfig(
        method="svae_plus", n_genes=adata.n_vars, n_latent=15,
        n_perturbations=len(adata.uns["perturbations"]), hyperparameters={"alpha": 100.0},
    )
    train_cfg = TrainConfig(epochs=args.train_epochs, warmup_epochs=1, seed=0)
    (model, _, _, _), = train_runs([adata], [model_cfg], [train_cfg], str(device), stacked=False)
    data = RunData(adata, train_cfg.val_fraction, train_cfg.seed, device)
    x, labels = data.cells(data.heldout_cells)
    rows = []
    for particles in args.particles:
        generator = torch.Generator(device=device).manual_seed(0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        iwelbo = model.iwelbo(x, labels, particles, generator, args.memory_mb)
        value = float(iwelbo.mean())  # synchronises
        seconds = time.perf_counter() - tic
        rows.append(
            {
                "particles": particles,
                "cells": x.shape[0],
                "seconds": round(seconds, 2),
                "particle_cells_per_s": round(particles * x.shape[0] / seconds),
                "inll": round(-value, 3),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            }
        )
    print(
        f"{machine_line(device, args.threads)}; block {args.memory_mb:g} MB; "
        f"{x.shape[0]} held-out cells x {adata.n_vars} genes"
    )
    pd.DataFrame(rows).to_csv(sys.stdout, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
