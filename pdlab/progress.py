"""Progress bars for long runs: tqdm on stderr (so ``--json`` keeps stdout clean), the
ipywidgets bar in a notebook, nothing for short runs or when ``PDLAB_PROGRESS=0``."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable

# a bar appears only after this many seconds, so short runs print nothing
DELAY_S = 2.0


def enabled() -> bool:
    return os.environ.get("PDLAB_PROGRESS", "1") != "0"


def _in_notebook() -> bool:
    """A running Jupyter kernel, not merely ipykernel imported (pytest's nbval plugin imports it;
    the notebook bar would then print its text fallback on stdout)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress(iterable: Iterable, total: int | None = None, desc: str | None = None,
             unit: str = "it", **kw):
    """Wrap ``iterable`` in a progress bar that shows after :data:`DELAY_S` seconds."""
    if not enabled():
        return iterable
    if _in_notebook():
        from tqdm.notebook import tqdm
        kw.setdefault("leave", False)
    else:
        from tqdm import tqdm
        kw.setdefault("file", sys.stderr)
        kw.setdefault("delay", DELAY_S)
        kw.setdefault("leave", False)
        # only on a terminal: logs and pipes get no carriage-return noise
        kw.setdefault("disable", not sys.stderr.isatty())
    return tqdm(iterable, total=total, desc=desc, unit=unit, **kw)


def bar(total: float, desc: str | None = None, unit: str = "it", **kw):
    """A manual bar (``update(n)``, ``close()``), e.g. simulated seconds of a long run."""
    return progress(None, total=total, desc=desc, unit=unit, **kw) if enabled() else _Null()


class _Null:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
