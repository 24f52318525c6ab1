"""``gc_paused()``: hold Python's cyclic garbage collector for a block of code.

The simulator's event loop and metrics make millions of small objects but no reference cycles, and
a timed engine step must not absorb a collection that happens to land in it. Reference counting
still frees everything; only the cycle scans wait until the block ends."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
