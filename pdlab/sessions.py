"""Multi-turn sessions: the workload that makes a long conversation expensive.

Every turn of a session sends the whole conversation so far: (system prompt) + every earlier user
turn and answer + the new user turn. So turn k's prompt extends turn k-1's prompt and answer, and
a prefix cache on the right replica serves everything but the newest part. Sessions start as a
Poisson process; the next turn of a session arrives a think time (exponential) after the previous
one; user turns and answers have lognormal lengths. Optionally all sessions share one system prompt
(an agent's instructions, a RAG template): a prefix every request has.

Requests carry ``block_hashes`` (ids of ``hash_block``-token blocks: block b of a session's stream
is the same id in every turn that has it complete) and ``session_id``; nothing is tokenised.

Presets (chosen to show the effect, not fitted to a trace: no shipped trace has sessions):

    chat-sessions    4 turns on average, 120-token questions, 250-token answers, 20 s between turns
    agent-sessions   a 2048-token system prompt shared by every session, 8 turns of 300-token tool
                     output and 120-token actions, 3 s apart
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import PdlabError
from .request import Request

SYSTEM_ID_BASE = 1 << 40         # block ids of the shared system prompt: apart from any session's


@dataclass(frozen=True)
class SessionSpec:
    turns: float = 4.0           # mean turns per session (geometric, at least 1)
    think_s: float = 20.0        # mean seconds between a session's turns (exponential)
    user_len: int = 120          # median tokens of a user turn (lognormal, sigma 0.8)
    answer_len: int = 250        # median tokens of an answer (lognormal, sigma 0.6)
    system_len: int = 0          # system prompt tokens at the start of every session
    shared_system: bool = False  # the same system prompt in every session (else one per session)
    max_len: int = 32768         # a session ends before its prompt would pass this
    hash_block: int = 16         # tokens per block id

    def validate(self) -> "SessionSpec":
        if not self.turns >= 1:
            raise PdlabError(f"sessions need >= 1 turn on average, got {self.turns}")
        if not self.think_s >= 0:
            raise PdlabError(f"think time must be >= 0 s, got {self.think_s}")
        for k in ("user_len", "answer_len", "max_len", "hash_block"):
            if getattr(self, k) < 1:
                raise PdlabError(f"sessions: {k} must be >= 1, got {getattr(self, k)}")
        if self.system_len < 0:
            raise PdlabError(f"sessions: system_len must be >= 0, got {self.system_len}")
        return self


SESSION_PRESETS: dict[str, SessionSpec] = {
    "chat-sessions": SessionSpec(),
    "agent-sessions": SessionSpec(turns=8, think_s=3.0, user_len=300, answer_len=120, system_len=2048,
                                  shared_system=True),
}


def session_preset(name: str) -> SessionSpec:
    try:
        return SESSION_PRESETS[name]
    except KeyError:
        raise PdlabError(f"unknown session preset '{name}' (choose from: {', '.join(SESSION_PRESETS)})") from None


def stream_ids(session: int, length: int, spec: SessionSpec) -> tuple[int, ...]:
    """Block ids of the first ``length`` tokens of ``session``'s conversation stream."""
    hb = spec.hash_block
    out = []
    for b in range(-(-length // hb)):
        if spec.shared_system and (b + 1) * hb <= spec.system_len:
            out.append(SYSTEM_ID_BASE + b)             # wholly inside the shared system prompt
        else:
            out.append((session + 1) * (1 << 20) + b)
    return tuple(out)


def make_sessions(num_requests: int, rate: float, spec: SessionSpec | str = "chat-sessions",
                  seed: int = 0) -> list[Request]:
    """At least ``num_requests`` turns (whole sessions, then cut to ``num_requests`` in arrival
    order) of sessions starting at ``rate`` per second."""
    if isinstance(spec, str):
        spec = session_preset(spec)
    spec.validate()
    if num_requests < 1:
        raise PdlabError(f"number of requests must be >= 1, got {num_requests}")
    if not rate > 0:
        raise PdlabError(f"session rate must be > 0 per second, got {rate}")
    rng = np.random.default_rng(seed)
    rows = []      # (arrival, session, prompt_len, answer_len)
    t, sid = 0.0, 0
    while len(rows) < num_requests:
        turns = int(rng.geometric(1.0 / spec.turns))
        context, at = spec.system_len, t
        for _ in range(turns):
            user = max(1, int(round(spec.user_len * np.exp(rng.normal(0, 0.8)))))
            answer = max(1, int(round(spec.answer_len * np.exp(rng.normal(0, 0.6)))))
            if context + user + answer > spec.max_len:
                break
            rows.append((at, sid, context + user, answer))
            context += user + answer
            at += float(rng.exponential(spec.think_s)) if spec.think_s else 0.0
        sid += 1
        t += float(rng.exponential(1.0 / rate))
    rows.sort(key=lambda r: (r[0], r[1]))
    rows = rows[:num_requests]
    return [Request(i, at, plen, ans, block_hashes=stream_ids(s, plen, spec), hash_block=spec.hash_block,
                    session_id=s) for i, (at, s, plen, ans) in enumerate(rows)]


def retime(requests: list[Request], rate_scale: float) -> list[Request]:
    """The same sessions with every arrival time divided by ``rate_scale`` (busier traffic)."""
    return [replace(r, arrival=r.arrival / rate_scale) for r in requests]
