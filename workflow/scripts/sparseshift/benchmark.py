"""Training-speed benchmark: seconds per epoch of every method on a simulated dataset.

Usage (prints the machine and a TSV table)::

    python -m sparseshift.benchmark --threads 1 --epochs 6 --batch-size 128
    python -m sparseshift.benchmark --threads 2 --epochs 3 --scale replogle   # Replogle-sized data

``--scale replogle`` simulates a dataset of the Replogle arm's size (682 perturbations x 171
cells = 116,622 cells x 1,187 genes, p = 50) and trains models of that size.

The paper simulation has 100 perturbations x 250 cells, 20 of them held out:
20,000 training cells x 100 genes, of which 18,000 are trained on after the 10%
validation split. Each method is trained by ``train_run``, as in the pipeline; the loop times
each epoch's minibatch loop itself (``train_seconds`` in the history, excluding
the validation pass); the first epoch, which pays one-off allocation costs, is
reported separately and left out of the median.
"""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np
import pandas as pd
import torch

from .model import METHODS, ModelConfig
from .run import train_run, training_cells
from .simulate import SimulationConfig, simulate
from .train import TrainConfig, select_device, split_train_val


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# Dataset sizes: the paper simulation, and one of the Replogle arm's size (116,641 cells x
# 1,187 genes, p = 50, ~680 perturbations) drawn by the same simulator.
SCALES = {
    "paper": {},
    "replogle": dict(n_latent=50, n_perturbations=682, n_heldout=35, cells_per_perturbation=171,
                     n_genes=1187, targets_max=3),
}


def machine_line(device: torch.device, threads: int) -> str:
    """The CPU, torch, threads and device a benchmark ran on (its output's first line)."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return f"# {cpu_model()}; torch {torch.__version__}; {threads} thread(s); device {device} (GPU: {gpu})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--scale", choices=sorted(SCALES), default="paper",
                    help="paper: 20,000 cells x 100 genes, p = 15; replogle: 116,622 x 1,187, p = 50")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    adata = simulate(SimulationConfig(seed=0, **SCALES[args.scale]))
    n_latent = adata.uns["simulation"]["n_latent"]
    n_perturbations = len(adata.uns["perturbations"])
    n_train = len(split_train_val(int(training_cells(adata).sum()), 0.1, 0)[0])
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=50, seed=0)
    rows = []
    for method in args.methods:
        model_cfg = ModelConfig(
            method=method, n_genes=adata.n_vars, n_latent=n_latent, n_perturbations=n_perturbations,
            beta=8.0 if method == "beta_vae" else 1.0, alpha=100.0, lam=1.0,
        )
        _, history, _, _ = train_run(adata, model_cfg, train_cfg, str(device))
        seconds = history["train_seconds"]
        steady = float(np.median(seconds.iloc[1:])) if len(seconds) > 1 else float(seconds.iloc[0])
        rows.append(
            {
                "method": method,
                "first_epoch_s": round(float(seconds.iloc[0]), 4),
                "median_s_per_epoch": round(steady, 4),
                "cells_per_s": round(n_train / steady),
            }
        )
    print(
        f"{machine_line(device, args.threads)}; batch {args.batch_size}; {n_train} training cells x "
        f"{adata.n_vars} genes, p = {n_latent}; median of epochs 2-{args.epochs}"
    )
    pd.DataFrame(rows).to_csv(sys.stdout, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
