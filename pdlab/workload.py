"""Workloads: arrival processes, length distributions, presets from public traces, trace files.

Presets ``sharegpt``, ``arxiv``, ``azure-conv`` and ``mooncake-conv`` resample (input, output)
pairs from the public traces shipped in ``data/traces`` (see its README for sources and
licences), so prompt/answer correlations are kept. ``chat-long`` is pdlab's interference mix:
short chats with an occasional long retrieval-style prompt.

Trace files are read and written by ``pdlab.traces``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .errors import PdlabError
from .paths import TRACES
from .request import Request
from .traces import read_trace

PRESET_FILES = {
    "sharegpt": "sharegpt_8k.csv",
    "arxiv": "arxiv_4k.csv",
    "azure-conv": "azure_conv.csv",
    "mooncake-conv": "mooncake_conv.jsonl",
}


# ---- length distributions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Lengths:
    """How prompt and output lengths are drawn.

    kind: ``fixed`` (a, b = input, output), ``uniform`` (input in [a, a2], output in [b, b2]),
    ``lognormal`` (medians a, b with sigmas s_in, s_out), ``trace`` (resample pairs of a preset),
    ``mix`` (chat-long: ``long_share`` of requests have a ``long_len`` prompt).
    """

    kind: str = "fixed"
    a: int = 512
    b: int = 128
    a2: int = 0
    b2: int = 0
    s_in: float = 0.8
    s_out: float = 0.6
    preset: str = ""
    long_len: int = 8192
    long_share: float = 0.05
    max_len: int = 131072

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = self.kind
        if k == "fixed":
            pin, pout = np.full(n, self.a), np.full(n, self.b)
        elif k == "uniform":
            pin = rng.integers(self.a, max(self.a, self.a2) + 1, n)
            pout = rng.integers(self.b, max(self.b, self.b2) + 1, n)
        elif k == "lognormal":
            pin = np.rint(self.a * np.exp(rng.normal(0, self.s_in, n)))
            pout = np.rint(self.b * np.exp(rng.normal(0, self.s_out, n)))
        elif k == "trace":
            tin, tout = preset_pairs(self.preset)
            idx = rng.integers(0, len(tin), n)
            pin, pout = tin[idx], tout[idx]
        elif k == "mix":
            # short chats (ShareGPT-like, capped) + occasional long prompts with short answers
            pin = np.rint(np.clip(self.a * np.exp(rng.normal(0, 0.6, n)), 16, 4 * self.a))
            pout = np.rint(np.clip(self.b * np.exp(rng.normal(0, 0.5, n)), 8, 4 * self.b))
            long = rng.random(n) < self.long_share
            pin[long] = self.long_len
            pout[long] = np.minimum(pout[long], 64)
        else:
            raise PdlabError(f"unknown length distribution '{k}'")
        pin = np.clip(pin, 1, self.max_len).astype(np.int64)
        pout = np.clip(pout, 1, self.max_len).astype(np.int64)
        return pin, pout


PRESETS: dict[str, Lengths] = {
    "sharegpt": Lengths("trace", preset="sharegpt"),
    "arxiv": Lengths("trace", preset="arxiv"),
    "azure-conv": Lengths("trace", preset="azure-conv"),
    "mooncake-conv": Lengths("trace", preset="mooncake-conv"),
    "chat-long": Lengths("mix", a=256, b=128, long_len=8192, long_share=0.05),
}


def preset_lengths(name: str) -> Lengths:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise PdlabError(f"unknown workload preset '{name}' (choose from: {', '.join(PRESETS)})") from None


@lru_cache(maxsize=None)
def preset_pairs(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) lengths of a shipped trace, read once."""
    reqs = read_trace(TRACES / PRESET_FILES[name])
    return (np.array([r.prompt_len for r in reqs], dtype=np.int64),
            np.array([r.max_new_tokens for r in reqs], dtype=np.int64))


# ---- arrivals ------------------------------------------------------------------------------------
def arrivals(n: int, rate: float, rng: np.random.Generator, burstiness: float = 1.0) -> np.ndarray:
    """Arrival times of ``n`` requests at ``rate`` per second. ``burstiness`` is the squared
    coefficient of variation of the gaps: 1 = Poisson, > 1 = bursty (gamma gaps)."""
    if not rate > 0:
        raise PdlabError(f"rate must be > 0 requests/s, got {rate}")
    if not burstiness > 0:
        raise PdlabError(f"burstiness must be > 0, got {burstiness}")
    shape = 1.0 / burstiness
    gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    return np.cumsum(gaps) - gaps[0]     # first request at t = 0


def make_requests(n: int, rate: float, lengths: Lengths | str = "sharegpt", seed: int = 0,
                  burstiness: float = 1.0, show_progress: bool = False) -> list[Request]:
    """``n`` requests with lengths from ``lengths`` (a preset name or a Lengths) arriving at
    ``rate``. Same seed, same requests; a different rate only rescales the arrival times.
    ``show_progress``: a bar on stderr while millions of requests are built (the CLI's)."""
    if n < 1:
        raise PdlabError(f"number of requests must be >= 1, got {n}")
    if isinstance(lengths, str):
        lengths = preset_lengths(lengths)
    rng = np.random.default_rng(seed)
    pin, pout = lengths.sample(n, rng)
    t = arrivals(n, rate, np.random.default_rng(seed + 1), burstiness)
    ids = range(n)
    if show_progress:
        from .progress import progress
        ids = progress(ids, total=n, desc="making requests", unit="req")
    return [Request(i, float(t[i]), int(pin[i]), int(pout[i])) for i in ids]


def with_rate(requests: list[Request], rate: float, seed: int = 0, burstiness: float = 1.0) -> list[Request]:
    """The same requests (lengths, ids, prefixes) re-timed as arrivals at ``rate``."""
    t = arrivals(len(requests), rate, np.random.default_rng(seed + 1), burstiness)
    return [replace(r, arrival=float(t[i])) for i, r in enumerate(requests)]
