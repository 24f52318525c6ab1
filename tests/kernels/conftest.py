"""Kernel tests run on the CPU through Numba's CUDA simulator unless a GPU is present. The
variable must be set before numba is imported, so it is set here, at collection time."""

import os


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if not _has_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
