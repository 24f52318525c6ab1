"""Fixtures for the engine tests.

torch runs single-threaded here: these models are far too small for intra-op threads to pay,
and on a shared 2-core CI machine extra threads make every step 10-30x slower."""

from __future__ import annotations

import pytest
import torch

from pdlab.engine import model as M

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    return M.load_tiny()
