"""Exercise checks used by the labs: each compares the learner's answer with the package's
reference and prints "yours vs expected". A check never raises for a wrong answer: it prints
FAIL and returns False, so a workshop keeps flowing; an unattempted exercise prints TODO."""

from __future__ import annotations

import math


def report(name: str, ok: bool, yours, expected, hint: str = "") -> bool:
    mark = "PASS" if ok else "FAIL"
    print(f"[{mark}] {name}: yours = {yours!r}, expected = {expected!r}")
    if not ok and hint:
        print(f"       hint: {hint}")
    return ok


def attempt(name: str, fn, *args, **kwargs):
    """Call the learner's function; return (True, value) or (False, None) if still a stub."""
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        print(f"[TODO] {name}: not attempted yet (the stub still raises NotImplementedError)")
        return False, None


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
