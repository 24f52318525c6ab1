"""Test-wide setup: without a CUDA GPU, Numba kernels run on its CUDA simulator. This must be set
before numba is first imported, so it lives here, at the root (it covers tests/ and labs/)."""

import os

try:
    import torch
    _gpu = torch.cuda.is_available()
except ImportError:
    _gpu = False
if not _gpu:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if _gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
