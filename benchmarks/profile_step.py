"""Where the time of one stacked training step goes: torch.profiler over N models of a method.

Usage (prints the machine, the step time and the profiler's table by self CPU time)::

    python benchmarks/profile_step.py --method svae_plus --models 16 --steps 100 --rows 25

The step is that of the stacked jobs (``ModelStack``: the vmapped loss, backward, fused
Adam) on the paper simulation (seed 0) with batch 128, every model on its own minibatch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift, not an installed copy

from sparseshift.batched import ModelStack  # noqa: E402
from sparseshift.methods import METHODS  # noqa: E402
from sparseshift.runs import new_run  # noqa: E402
from sparseshift.simulate import SimulationConfig, simulate  # noqa: E402
from sparseshift.train import TrainConfig  # noqa: E402

from flops import paper_config  # noqa: E402  # benchmarks/flops.py, next to this script
from machine import machine_line  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=METHODS, default="svae_plus")
    ap.add_argument("--models", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    adata = simulate(SimulationConfig(seed=0))
    cfg = paper_config(args.method)  # 100 genes, p = 15, 100 perturbations: the simulation's defaults
    runs = [new_run(adata, cfg, TrainConfig(seed=s), device) for s in range(args.models)]
    stack = ModelStack([model for _, model in runs]).optimise(1e-3)
    stack.train()
    generator = torch.Generator().manual_seed(0)
    cells = [torch.as_tensor(data.train_cells)[torch.randperm(len(data.train_cells), generator=generator)[:128]]
             for data, _ in runs]
    x = torch.stack([data.x[c] for (data, _), c in zip(runs, cells)])
    labels = torch.stack([data.labels[c] for (data, _), c in zip(runs, cells)])
    steps_per_epoch = -(-len(runs[0][0].train_cells) // 128)

    def step():
        loss, _ = stack.loss(x, labels, 0.5, len(runs[0][0].train_cells))
        stack.optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()
        stack.optimiser.step()

    for _ in range(10):  # warm-up: allocations, Adam state
        step()
    tic = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - tic) / args.steps
    print(f"{machine_line(device, args.threads)}; {args.method}, {args.models} stacked models, batch 128: "
          f"{seconds * 1e3:.2f} ms per step, {seconds * steps_per_epoch / args.models:.3f} s per model-epoch "
          f"({steps_per_epoch} steps)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
