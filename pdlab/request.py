"""The data that flows through pdlab: Request (what arrives), Sequence (its runtime state) and
Batch (what one iteration runs). Imports nothing else of pdlab.

Token accounting follows one rule for every mode: a sequence has ``num_tokens`` tokens (prompt plus
generated so far) and ``num_computed`` of them already have KV in the cache. An iteration computes
some of the remaining ``num_tokens - num_computed``: a whole prompt, a prefill chunk, or the single
newest token (a decode). When an iteration reaches ``num_tokens`` the model samples one new token.
Preemption by recompute simply sets ``num_computed`` back to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    WAITING = "waiting"            # queued, no KV yet (or preempted and queued again)
    RUNNING = "running"            # admitted: prefilling or decoding
    TRANSFERRING = "transferring"  # disaggregated: prefill done, KV waiting for / crossing the link
    PREEMPTED = "preempted"        # KV dropped under memory pressure; will be recomputed
    FINISHED = "finished"
    REJECTED = "rejected"          # can never run here; ``Sequence.reject_reason`` says why


@dataclass(frozen=True)
class Request:
    """One request as it arrives.

    ``prompt_ids`` is optional: the simulator only needs lengths, the real engine needs ids.
    ``block_hashes`` names the prompt's blocks of ``hash_block`` tokens for prefix caching
    (equal ids = equal content, as in the Mooncake trace); pdlab derives hashes from
    ``prompt_ids`` when absent.
    """

    id: int
    arrival: float              # seconds
    prompt_len: int
    max_new_tokens: int
    prompt_ids: tuple[int, ...] | None = None
    block_hashes: tuple[int, ...] | None = None
    hash_block: int = 512
    session_id: int | None = None
    stop_ids: tuple[int, ...] = ()   # sampling one of these ends the request (an end-of-sequence token)

    def __post_init__(self):
        if self.prompt_len < 1:
            raise ValueError(f"request {self.id}: prompt length must be >= 1, got {self.prompt_len}")
        if self.max_new_tokens < 1:
            raise ValueError(f"request {self.id}: max new tokens must be >= 1, got {self.max_new_tokens}")
        if self.prompt_ids is not None and len(self.prompt_ids) != self.prompt_len:
            raise ValueError(f"request {self.id}: {len(self.prompt_ids)} prompt ids but prompt_len {self.prompt_len}")


class Sequence:
    """A request's runtime state on the worker that holds it."""

    __slots__ = ("request", "id", "status", "prompt_len", "max_new_tokens", "num_tokens",
                 "num_computed", "num_cached", "block_table", "output_ids", "_times",
                 "first_scheduled", "finish_time", "reject_reason", "num_preemptions",
                 "transfer_start", "transfer_end", "worker", "finish_at", "_hashes",
                 "_group", "_g0", "_nt0", "_gep", "_gblk", "_rank",
                 "num_reloaded", "reload_s")

    def __init__(self, request: Request):
        self.request = request
        self.id = request.id
        self.status = Status.WAITING
        self.prompt_len = request.prompt_len
        self.max_new_tokens = request.max_new_tokens
        self.num_tokens = request.prompt_len      # prompt + generated
        self.finish_at = request.prompt_len + request.max_new_tokens   # num_tokens when done
        self.num_computed = 0                     # tokens whose KV is in the cache
        self.num_cached = 0                       # prompt tokens served by the prefix cache
        self.num_reloaded = 0                     # ... of which came back from host memory
        self.reload_s = 0.0                       # seconds that reload took (charged to its step)
        self.block_table: list[int] = []
        self.output_ids: list[int] = []           # filled only by executors that produce tokens
        # emission times of the output tokens, as pieces: a float (one token) or ``(times, a, b)``,
        # the slice ``times[a:b]`` of a worker's decode-step end times (``token_times`` joins them)
        self._times: list = []
        self.first_scheduled: float | None = None
        self.finish_time: float | None = None
        self.reject_reason: str | None = None
        self.num_preemptions = 0
        self.transfer_start: float | None = None  # disaggregated: KV transfer window
        self.transfer_end: float | None = None
        self.worker: str | None = None            # name of the worker that emitted the first token
        self._hashes: tuple[int, ...] | None = None
        # while in a worker's DecodeGroup (pdlab.serving.decoding): the group, the group step it
        # joined at, its num_tokens then, and its membership number (0: not a member)
        self._group = None
        self._g0 = self._nt0 = self._gep = self._gblk = self._rank = 0

    @property
    def token_times(self) -> list[float]:
        """Emission time of every output token (built on demand from the stored pieces)."""
        out: list[float] = []
        for p in self._times:
            if type(p) is tuple:
                times, a, b = p
                out.extend(times[a:b])
            else:
                out.append(p)
        if self._gep:                          # decoding in a group right now: its open piece
            g = self._group
            out.extend(g.times[self._g0:g.step])
        return out

    @token_times.setter
    def token_times(self, times) -> None:
        self._times = list(times)

    def move_first_token(self, t: float) -> None:
        """The first token reaches the user at ``t`` instead (a P/D proxy returns it from the
        decode side). Only before decoding starts: the first piece is then that one float."""
        if not self._times or type(self._times[0]) is tuple:
            raise ValueError(f"sequence {self.id}: no lone first token to move")
        self._times[0] = t

    def num_token_times(self) -> int:
        """len(token_times) without building it."""
        n = sum(p[2] - p[1] if type(p) is tuple else 1 for p in self._times)
        return n + (self._group.step - self._g0 if self._gep else 0)

    @property
    def num_output(self) -> int:
        return self.num_tokens - self.prompt_len

    @property
    def arrival(self) -> float:
        return self.request.arrival

    def __repr__(self):
        return (f"Sequence(id={self.id}, {self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed}, out={self.num_output}/{self.max_new_tokens})")


@dataclass
class Batch:
    """What one iteration runs.

    ``prefills`` are ``(seq, n)`` pairs: compute KV for tokens ``[seq.num_computed,
    seq.num_computed + n)``. ``decodes`` compute the single newest token of each sequence.
    Fields are filled by the scheduler when it builds the batch, so the cost model and the
    engine read the shape without walking sequences again.
    """

    prefills: list[tuple[Sequence, int]] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    num_prefill_tokens: int = 0
    decode_context: int = 0     # sum over decodes of their context length (KV read per layer)
    # decodes of a worker's DecodeGroup (pdlab.serving.decoding): counted here, not listed in
    # ``decodes``; only executors that read no per-sequence decode state get such batches
    group_decodes: int = 0
    num_running: int = 0        # sequences resident on the worker as the step starts (set by Worker.start)
    reload_s: float = 0.0       # prefix KV copied back from host memory for this iteration's prompts

    def add_prefill(self, seq: Sequence, n: int) -> None:
        self.prefills.append((seq, n))
        self.num_prefill_tokens += n

    def add_decode(self, seq: Sequence) -> None:
        self.decodes.append(seq)
        self.decode_context += seq.num_tokens

    def contains(self, seq: Sequence) -> bool:
        if self.group_decodes and seq._gep:     # every member of the group decodes in this batch
            return True
        return any(s is seq for s, _ in self.prefills) or any(s is seq for s in self.decodes)

    @property
    def num_decode_tokens(self) -> int:
        return len(self.decodes) + self.group_decodes

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + len(self.decodes) + self.group_decodes

    def __bool__(self) -> bool:
        return bool(self.prefills or self.decodes or self.group_decodes)

    @property
    def phase(self) -> str:
        """'prefill', 'decode', 'mixed' or 'idle': the phase mix of this iteration."""
        dec = self.decodes or self.group_decodes
        if self.prefills and dec:
            return "mixed"
        return "prefill" if self.prefills else ("decode" if dec else "idle")

    def sampling(self) -> list[Sequence]:
        """Sequences that emit a token after this iteration, in batch order (prefill chunks
        that reach the end of their tokens, then every decode). Executors return one token
        per entry, in this order."""
        out = [s for s, n in self.prefills if s.num_computed + n == s.num_tokens]
        out.extend(self.decodes)
        return out


@dataclass
class StepResult:
    """What an executor returns: ``seconds`` the iteration took (measured or predicted) and
    ``tokens`` (one per ``batch.sampling()`` entry), or None when no tokens are computed."""

    seconds: float
    tokens: list[int] | None = None
