"""Lab 08's three mystery traces, generated with stated parameters (seeded: same seed, same
trace). Each is a list of ``Request`` with Poisson arrivals.

    code_completion  long prompts (the file around the cursor), tiny answers: lognormal prompts
                     with median 3000 tokens (sigma 0.5, capped at 16k), answers median 24 (sigma 0.6)
    chat             ShareGPT conversations: (input, output) pairs resampled from the shipped trace
    agent            multi-turn agent sessions: a 2048-token system prompt shared by every session,
                     then turns whose prompt is the whole conversation so far (previous prompt +
                     previous answer + a new 200-400-token tool result); answers 100-300 tokens.
                     Prompt blocks carry ids (512 tokens each, as in the Mooncake trace), so a prefix
                     cache can reuse the shared system prompt and every earlier turn.
"""

from __future__ import annotations

import numpy as np

from ..request import Request
from ..workload import Lengths, arrivals, make_requests

HASH_BLOCK = 512
PARAMS = {
    "code_completion": "prompts lognormal median 3000 tokens (sigma 0.5, <= 16384), answers lognormal median 24 "
                       "(sigma 0.6)",
    "chat": "ShareGPT (input, output) pairs resampled from data/traces/sharegpt_8k.csv",
    "agent": "sessions of 4-8 turns; a 2048-token shared system prompt; each turn's prompt = the conversation so "
             "far + a 200-400-token tool result; answers 100-300 tokens; 512-token prefix block ids",
}


def code_completion(n: int, rate: float, seed: int = 0) -> list[Request]:
    reqs = make_requests(n, rate, Lengths("lognormal", a=3000, b=24, s_in=0.5, s_out=0.6, max_len=16384), seed)
    return reqs


def chat(n: int, rate: float, seed: int = 0) -> list[Request]:
    return make_requests(n, rate, "sharegpt", seed)


def agent(n: int, rate: float, seed: int = 0, system_len: int = 2048) -> list[Request]:
    """``n`` requests from interleaved agent sessions (a new session starts when one ends)."""
    rng = np.random.default_rng(seed)
    system = tuple(range(1, system_len // HASH_BLOCK + 1))        # the shared system prompt's block ids
    next_id = [10_000]

    def fresh(k):
        ids = tuple(range(next_id[0], next_id[0] + k))
        next_id[0] += k
        return ids

    reqs: list[Request] = []
    t = arrivals(n, rate, np.random.default_rng(seed + 1))
    live: list[dict] = []
    sid = 0
    for i in range(n):
        if not live or rng.random() < 0.25:       # a new session joins about every fourth request
            live.append({"id": sid, "turns": int(rng.integers(4, 9)), "ids": system, "len": system_len})
            sid += 1
        s = live[int(rng.integers(0, len(live)))]
        new = int(rng.integers(200, 401))
        plen = s["len"] + new
        ids = s["ids"] + fresh(-(-plen // HASH_BLOCK) - len(s["ids"]))
        out = int(rng.integers(100, 301))
        reqs.append(Request(i, float(t[i]), plen, out, block_hashes=ids, hash_block=HASH_BLOCK, session_id=s["id"]))
        # the next turn's prompt is this one plus its answer: its full blocks are this prompt's
        s["len"] = plen + out
        s["ids"] = ids[: plen // HASH_BLOCK]
        s["turns"] -= 1
        if s["turns"] == 0:
            live.remove(s)
    return reqs


TRACES = {"code_completion": code_completion, "chat": chat, "agent": agent}
