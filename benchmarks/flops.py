"""The arithmetic floor of a training epoch: matrix-product FLOPs per step against the machine's
measured matrix-product rate at the model's shapes.

Usage (prints the machine and a TSV table)::

    python benchmarks/flops.py --threads 1

For each method, one training step (forward, backward, Adam) of the paper simulation's model
(100 genes, p = 15, 2 x 128 hidden layers, batch 128) is counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products only; the element-wise work
comes on top). The rate is that of ``torch.addmm`` on the step's own layer shapes, timed here.
``floor_s_per_epoch`` = steps per epoch x FLOPs per step / rate: no implementation on this
core can train one model-epoch faster without less arithmetic; ``max_speedup`` divides the
released code's 1.15 s per epoch (``--reference``) by it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift

from sparseshift.methods import METHODS  # noqa: E402
from sparseshift.model import ModelConfig, SparseShiftVAE  # noqa: E402

from machine import machine_line  # noqa: E402


def paper_config(method: str) -> ModelConfig:
    """The paper simulation's model of ``method`` (100 genes, p = 15, 100 perturbations)."""
    return ModelConfig(method=method, n_genes=100, n_latent=15, n_perturbations=100,
                       hyperparameters={"alpha": 100.0, "beta": 8.0, "lambda": 1.0})


def paper_model(method: str) -> SparseShiftVAE:
    torch.manual_seed(0)
    return SparseShiftVAE(paper_config(method))


def step_flops(method: str, batch: int) -> int:
    model = paper_model(method)
    x = torch.poisson(torch.full((batch, model.cfg.n_genes), 20.0))
    labels = torch.randint(0, 80, (batch,))
    optimiser = torch.optim.Adam(model.parameters(), fused=True)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.loss(x, labels, 1.0, 18000)
        loss.backward()
        optimiser.step()
    return counter.get_total_flops()


def addmm_rate(model: torch.nn.Module, batch: int, repeats: int = 2000) -> float:
    """FLOP/s of addmm over the shapes of ``model``'s linear layers, forward-sized, best of 3."""
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    mats = [(torch.randn(batch, i), torch.randn(i, o), torch.randn(o)) for i, o in shapes]
    flops = sum(2 * batch * i * o for i, o in shapes) * repeats
    best = math.inf
    for _ in range(3):
        tic = time.perf_counter()
        for _ in range(repeats):
            for a, w, b in mats:
                torch.addmm(b, a, w)
        best = min(best, time.perf_counter() - tic)
    return flops / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-cells", type=int, default=18000, help="the paper simulation at 250 cells")
    ap.add_argument("--reference", type=float, default=1.15)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rate = addmm_rate(paper_model("vae"), args.batch_size)
    steps = math.ceil(args.train_cells / args.batch_size)
    print(f"{machine_line(torch.device('cpu'), args.threads)}; addmm at the model's shapes: "
          f"{rate / 1e9:.1f} GFLOP/s; {steps} steps per epoch")
    print("method\tgflop_per_step\tfloor_s_per_epoch\tmax_speedup")
    for method in METHODS:
        flops = step_flops(method, args.batch_size)
        floor = steps * flops / rate
        print(f"{method}\t{flops / 1e9:.4f}\t{floor:.3f}\t{args.reference / floor:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
