"""The arithmetic-floor benchmark (benchmarks/flops.py) counts the whole training step."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # its sibling module machine.py
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_flop_count_is_that_of_forward_and_backward_of_every_layer():
    """Forward: 2 x batch x in x out per layer; backward: twice that (gradients of the weights
    and of the inputs), except the input gradient of the encoder's first layer (the counts
    need none). A counter that missed the backward pass or a layer would not give this."""
    flops = load("flops")
    batch = 16
    encoder = [(100, 128), (128, 128), (128, 30)]  # 30 = location and scale of p = 15
    decoder = [(15, 128), (128, 128), (128, 100)]
    forward = sum(2 * batch * i * o for i, o in encoder + decoder)
    expected = 3 * forward - 2 * batch * 100 * 128
    for method in ("vae", "svae_plus"):
        assert flops.step_flops(method, batch) == expected


def test_the_stacked_step_profile_runs_the_layers_as_batched_matrix_products(capsys):
    """profile_step.py profiles the stacked step: vmap turns each linear layer of the N models
    into one batched product (bmm), so an unbatched or unprofiled step would not show it."""
    load("profile_step").main(["--method", "vae", "--models", "2", "--steps", "2", "--rows", "5"])
    out = capsys.readouterr().out
    assert "vae, 2 stacked models, batch 128" in out and "ms per step" in out
    assert "aten::bmm" in out
