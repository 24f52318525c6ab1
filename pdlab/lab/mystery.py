"""Lab 08's three mystery traces, generated with stated parameters (seeded: same seed, same
trace). Each is a list of ``Request`` with Poisson arrivals.

    code_completion  long prompts (the file around the cursor), tiny answers: lognormal prompts
                     with median 3000 tokens (sigma 0.5, capped at 16k), answers median 24 (sigma 0.6)
    chat             ShareGPT conversations: (input, output) pairs resampled from the shipped trace
    agent            multi-turn agent sessions (``pdlab.sessions``' agent-sessions preset): a
                     2048-token system prompt shared by every session, about 8 turns whose prompt is
                     the whole conversation so far plus a new tool result (median 300 tokens),
                     actions of median 120 tokens, 3 s apart. Prompt blocks carry ids, so a prefix
                     cache can reuse the shared system prompt and every earlier turn.
"""

from __future__ import annotations

from ..request import Request
from ..sessions import make_sessions, session_preset
from ..workload import Lengths, make_requests

AGENT = session_preset("agent-sessions")
PARAMS = {
    "code_completion": "prompts lognormal median 3000 tokens (sigma 0.5, <= 16384), answers lognormal median 24 "
                       "(sigma 0.6)",
    "chat": "ShareGPT (input, output) pairs resampled from data/traces/sharegpt_8k.csv",
    "agent": "pdlab.sessions agent-sessions: ~8 turns per session, a 2048-token shared system prompt, each "
             "turn's prompt = the conversation so far + a tool result (median 300 tokens), actions median 120",
}


def code_completion(n: int, rate: float, seed: int = 0) -> list[Request]:
    return make_requests(n, rate, Lengths("lognormal", a=3000, b=24, s_in=0.5, s_out=0.6, max_len=16384), seed)


def chat(n: int, rate: float, seed: int = 0) -> list[Request]:
    return make_requests(n, rate, "sharegpt", seed)


def agent(n: int, rate: float, seed: int = 0) -> list[Request]:
    """``n`` turns of ``pdlab.sessions``' agent sessions arriving at about ``rate`` requests per
    second (sessions start at rate / 8: eight turns each on average)."""
    return make_sessions(n, rate / AGENT.turns, AGENT, seed)


TRACES = {"code_completion": code_completion, "chat": chat, "agent": agent}
