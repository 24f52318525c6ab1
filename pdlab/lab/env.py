"""What is this machine? Labs and the CLI print this so every number is labelled honestly."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path

#: Labs read this: small workloads in CI (``PDLAB_FAST=1``), full ones for people.
FAST = os.environ.get("PDLAB_FAST", "0") not in ("", "0", "false", "no")


def has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), for benchmark results."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def describe() -> dict:
    """A small dict naming the backend: where measured numbers would come from."""
    info = {"gpu": None, "numba_cuda": "absent", "fast_mode": FAST}
    if has_gpu():
        import torch
        info["gpu"] = torch.cuda.get_device_name(0)
    if cuda_simulator():
        info["numba_cuda"] = "simulator (NUMBA_ENABLE_CUDASIM=1): kernels run on the CPU, slowly, for correctness only"
    else:
        try:
            from numba import cuda
            info["numba_cuda"] = "GPU" if cuda.is_available() else "no CUDA device"
        except Exception as e:  # numba missing or broken: say so instead of failing a lab
            info["numba_cuda"] = f"unavailable ({type(e).__name__})"
    return info


def seed(s: int = 0) -> None:
    """Fix every random source a lab uses."""
    random.seed(s)
    try:
        import numpy as np
        np.random.seed(s)
    except ImportError:
        pass
    try:
        import torch
        torch.manual_seed(s)
    except ImportError:
        pass


def report(s: int = 0) -> dict:
    """Seed everything and print one line per fact; labs call this in their setup cell."""
    seed(s)
    info = describe()
    gpu = info["gpu"] or "none (CPU only: engine timings are CPU wall clock; GPU numbers are simulated by the cost model)"
    print(f"GPU:          {gpu}")
    print(f"Numba CUDA:   {info['numba_cuda']}")
    print(f"fast mode:    {'on (PDLAB_FAST=1): small workloads' if FAST else 'off'}")
    return info
