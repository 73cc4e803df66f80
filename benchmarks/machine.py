"""The machine a benchmark ran on: the first line of the output of train.py and iwelbo.py."""

from __future__ import annotations

import platform

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(device: torch.device, threads: int) -> str:
    """The CPU, torch, threads and device a benchmark ran on (its output's first line)."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return f"# {cpu_model()}; torch {torch.__version__}; {threads} thread(s); device {device} (GPU: {gpu})"
