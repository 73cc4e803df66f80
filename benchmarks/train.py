"""Training-speed benchmark: seconds per epoch of every method on a simulated dataset.

Usage (prints the machine and a TSV table)::

    python benchmarks/train.py --threads 1 --epochs 6 --models 1 5 10
    python benchmarks/train.py --threads 2 --epochs 3 --scale replogle --batch-size 128 1024
    python benchmarks/train.py --device cuda --models 1 5 25 --iwelbo 5000
    python benchmarks/train.py --device cuda --models 1 --cuda-graph off   # the eager step
    python benchmarks/train.py --models 5 10 --mixed    # stacks of every method (stack_methods)

``--scale replogle`` simulates a dataset of the Replogle arm's size (682 perturbations x 171
cells = 116,622 cells x 1,187 genes, p = 50) and trains models of that size.

The paper simulation has 100 perturbations x 250 cells, 20 of them held out:
20,000 training cells x 100 genes, of which 18,000 are trained on after the 10%
validation split. With ``--models 1`` each method is trained by ``train_runs`` as one model,
as in the pipeline; with ``--models N`` N models of the method (seeds 0..N-1) are trained
together by ``train_runs`` as a stack, as in the stacked jobs (``stack_models``). Every combination of ``--batch-size`` and
``--models`` is a row per method. The loop times each epoch's minibatch loop itself
(``train_seconds`` in the history, excluding the validation pass); the first epoch, which
pays one-off allocation costs, is reported separately and left out of the median.
``speedup_vs_reference`` divides ``--reference`` (the released implementation's seconds
per epoch on the paper simulation, batch 128, one thread) by the seconds per model-epoch.
Peak memory is the process's resident set on CPU, the allocator's peak on CUDA.
On CUDA the step is replayed as a CUDA graph (``sparseshift.step``) unless ``--cuda-graph off``.
``--iwelbo T ...`` then runs ``benchmarks/iwelbo.py`` with T particles.
"""

from __future__ import annotations

import argparse
import resource
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift, not an installed copy

from sparseshift.methods import METHODS  # noqa: E402

from sparseshift.model import ModelConfig  # noqa: E402
from sparseshift.data import training_cells  # noqa: E402
from sparseshift.runs import train_runs  # noqa: E402
from sparseshift.simulate import SimulationConfig, simulate  # noqa: E402
from sparseshift.train import TrainConfig, select_device, split_train_val  # noqa: E402

from machine import machine_line  # noqa: E402  # benchmarks/machine.py, next to this script


# Dataset sizes: the paper simulation, and one of the Replogle arm's size (116,641 cells x
# 1,187 genes, p = 50, ~680 perturbations) drawn by the same simulator.
SCALES = {
    "paper": {},
    "replogle": dict(n_latent=50, n_perturbations=682, n_heldout=35, cells_per_perturbation=171,
                     n_genes=1187, targets_per_perturbation=(1, 3)),
}


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: the device's allocator on CUDA, the process's RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_method(adata, model_cfgs: list[ModelConfig], train_cfg: TrainConfig, device: torch.device):
    """Seconds of each epoch's minibatch loop, per model (``train_runs``): one model as in the
    pipeline, or several (seeds 0..n-1 on the same data) stacked, as in the stacked jobs
    (``stack_models``; a stack's seconds are its time per epoch / its number of models)."""
    n_models = len(model_cfgs)
    runs = train_runs([adata] * n_models, model_cfgs,
                      [replace(train_cfg, seed=s) for s in range(n_models)], str(device), stacked=n_models > 1)
    return runs[0][1]["train_seconds"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[128])
    ap.add_argument("--models", type=int, nargs="+", default=[1],
                    help="models trained together in one process (1: the pipeline's training loop)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cuda-graph", choices=["on", "off"], default="on",
                    help="on CUDA, replay each training step as a CUDA graph (TrainConfig.cuda_graph); "
                         "off: the eager step. No effect on CPU")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--scale", choices=sorted(SCALES), default="paper",
                    help="paper: 20,000 cells x 100 genes, p = 15; replogle: 116,622 x 1,187, p = 50")
    ap.add_argument("--reference", type=float, default=1.15,
                    help="the released implementation's s / epoch at batch 128, one thread (PAPER.md)")
    ap.add_argument("--mixed", action="store_true",
                    help="one row per stack size whose models cycle through --methods (one stack of "
                         "several methods, as with the config key stack_methods)")
    ap.add_argument("--iwelbo", type=int, nargs="*", default=[],
                    help="also time the held-out IWELBO with these particle counts (iwelbo.py)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    adata = simulate(SimulationConfig(seed=0, **SCALES[args.scale]))
    n_latent = adata.uns["simulation"]["n_latent"]
    n_perturbations = len(adata.uns["perturbations"])
    n_train = len(split_train_val(int(training_cells(adata).sum()), 0.1, 0)[0])
    rows = []
    for batch_size in args.batch_size:
        train_cfg = TrainConfig(epochs=args.epochs, batch_size=batch_size, warmup_epochs=50, seed=0,
                                cuda_graph=args.cuda_graph == "on")
        for n_models in args.models:
            for method in ["mixed"] if args.mixed else args.methods:
                methods = [args.methods[i % len(args.methods)] if args.mixed else method for i in range(n_models)]
                model_cfgs = [ModelConfig(
                    method=m, n_genes=adata.n_vars, n_latent=n_latent, n_perturbations=n_perturbations,
                    hyperparameters={"beta": 8.0 if m == "beta_vae" else 1.0, "alpha": 100.0, "lambda": 1.0},
                ) for m in methods]
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds = time_method(adata, model_cfgs, train_cfg, device)
                steady = float(np.median(seconds.iloc[1:])) if len(seconds) > 1 else float(seconds.iloc[0])
                rows.append(
                    {
                        "method": method,
                        "batch_size": batch_size,
                        "models": n_models,
                        "first_epoch_s": round(float(seconds.iloc[0]) * n_models, 4),
                        "s_per_epoch": round(steady * n_models, 4),
                        "s_per_model_epoch": round(steady, 4),
                        "cells_per_s": round(n_train / steady),
                        # the reference is the released code on the paper simulation
                        "speedup_vs_reference": round(args.reference / steady, 2) if args.scale == "paper" else None,
                        "peak_memory_gb": round(peak_memory_gb(device), 2),
                    }
                )
    step = "CUDA graph" if device.type == "cuda" and args.cuda_graph == "on" else "eager"
    print(
        f"{machine_line(device, args.threads)}; {step} step; {n_train} training cells x {adata.n_vars} genes, "
        f"p = {n_latent}; median of epochs 2-{args.epochs}; reference {args.reference:g} s / epoch; "
        "peak memory: process RSS (CPU) or allocator peak (CUDA)"
    )
    pd.DataFrame(rows).to_csv(sys.stdout, sep="\t", index=False)
    sys.stdout.flush()
    if args.iwelbo:
        import iwelbo

        iwelbo.main(["--threads", str(args.threads), "--device", str(device), "--particles",
                               *map(str, args.iwelbo)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
