"""The scheduler: which tokens of which sequences run in the next iteration.

Every policy (``pdlab.serving.policies``) has the same three calls, used identically by the
simulator and the real engine:

    add(seq) -> bool                 queue a new sequence (False: rejected, ``seq.reject_reason`` says why)
    schedule(now) -> Batch           pick the next iteration (allocating its KV blocks)
    postprocess(batch, result, now)  advance token counts, emit tokens, free finished sequences

This module holds what they share: admission against the KV cache, the per-token decode pass,
preemption by recompute (the most recently admitted sequence loses its KV and goes back to the
front of the queue; nothing is ever dropped) and the token accounting of ``postprocess``.
A sequence finishes at ``max_new_tokens`` or when it samples one of its request's stop tokens.
"""

from __future__ import annotations

from collections import deque

from ..request import Batch, Sequence, Status, StepResult
from .kv import BlockManager

INF = float("inf")


class Scheduler:
    name = "base"

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256):
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []      # admitted, in admission order (preempt from the tail)
        self.num_preemptions = 0
        # keep a little memory free before admitting more, so running streams can grow
        self.watermark = block_manager.num_blocks // 100

    # ---- admission --------------------------------------------------------------------------
    def max_blocks_needed(self, seq: Sequence) -> int:
        """Blocks ``seq`` holds at its longest (the last token's KV is never computed)."""
        return self.bm.blocks_for(seq.prompt_len + seq.max_new_tokens - 1)

    def rejects(self, seq: Sequence) -> str | None:
        """Why ``seq`` can never run here (its KV could not fit even in an empty cache), or None."""
        need = self.max_blocks_needed(seq)
        if need > self.bm.num_blocks:
            return (f"needs {need} KV blocks ({seq.prompt_len} prompt + {seq.max_new_tokens} new "
                    f"tokens) but the cache holds {self.bm.num_blocks}")
        return None

    def add(self, seq: Sequence) -> bool:
        reason = self.rejects(seq)
        if reason is not None:
            seq.status = Status.REJECTED
            seq.reject_reason = reason
            return False
        seq.status = Status.WAITING
        self.waiting.append(seq)
        return True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def kv_load(self) -> tuple[int, int]:
        """(prefill blocks queued here, KV blocks active here): the load terms of a KV-aware
        router's cost. Active counts the blocks in use plus what waiting prompts will take."""
        bs = self.bm.block_size
        queued = active = 0
        for s in self.waiting:
            b = -(-(s.num_tokens - s.num_computed) // bs)
            queued += b
            active += b
        for s in self.running:
            left = s.num_tokens - s.num_computed
            if left > 1 or s.num_tokens == s.prompt_len:
                queued += -(-left // bs)
        return queued, self.bm.num_used + active

    @property
    def load(self) -> int:
        """Unfinished sequences here: what the least-loaded router compares."""
        return len(self.waiting) + len(self.running)

    def _has_room(self, need: int) -> bool:
        """Room for one more sequence holding ``need`` more blocks. An empty worker admits
        whatever fits at all, so progress is guaranteed; a busy one keeps the watermark free."""
        if len(self.running) >= self.max_num_seqs:
            return False
        return need <= self.bm.num_free - (self.watermark if self.running else 0)

    def _can_admit(self, seq: Sequence, n: int) -> bool:
        return self._has_room(self.bm.blocks_needed(seq, n))

    def _admit_waiting(self, batch: Batch, budget: float, now: float, whole: bool) -> float:
        """Admit waiting prompts in order while the budget and the cache allow: each runs all its
        remaining tokens (``whole``: a prompt larger than the budget runs alone) or as many as
        the budget leaves. Returns the budget left."""
        while self.waiting and (whole or budget >= 1):
            seq = self.waiting[0]
            self.bm.match_prefix(seq)
            n = seq.num_tokens - seq.num_computed
            if whole:
                fits = not (batch.prefills and n > budget)
            else:
                n = min(n, budget)
                fits = True
            if not (fits and self._can_admit(seq, n)):
                # a waiting sequence holds no blocks: a match kept while it waits (behind a
                # preemption, say) would pin cache blocks nobody computes with, until nothing fits
                self.bm.unmatch(seq)
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            if seq.first_scheduled is None:
                seq.first_scheduled = now
            self.running.append(seq)
            self.bm.allocate(seq, n)
            batch.add_prefill(seq, int(n))
            batch.reload_s += seq.reload_s
            budget -= n
        return budget

    def _preempt_tail(self) -> Sequence:
        victim = self.running.pop()
        self.bm.free(victim)
        victim.num_computed = victim.num_cached = 0
        victim.status = Status.PREEMPTED
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)
        return victim

    def _reserve(self, seq: Sequence, n: int, batch: Batch | None = None) -> bool:
        """Allocate KV for ``n`` more tokens of running ``seq``, preempting from the tail of the
        running list when memory is short. False if ``seq`` itself had to be preempted, or if the
        tail is already in ``batch`` (never preempt what this iteration will run)."""
        bm = self.bm
        need = bm.blocks_needed(seq, n)
        while need > bm.num_free:
            if batch is not None and batch.contains(self.running[-1]):
                return False
            if self._preempt_tail() is seq:
                return False
        if need:
            bm.allocate(seq, n)
        return True

    # ---- the iteration ----------------------------------------------------------------------
    def schedule(self, now: float) -> Batch:
        raise NotImplementedError

    def _schedule_decodes(self, batch: Batch, budget: float) -> tuple[list[Sequence], float]:
        """Give each running, decoding sequence its one token (in admission order, up to
        ``budget``); returns the running sequences that are still prefilling, and the budget left.
        This loop runs once per generated token, so it is kept flat. A decoding sequence holds
        KV for ``num_tokens - 1`` tokens in ``ceil((num_tokens - 1) / block_size)`` blocks, so its
        new token opens a block exactly when ``(num_tokens - 1) % block_size == 0``."""
        running, bm = self.running, self.bm
        bs = bm.block_size
        decodes, prefilling = batch.decodes, []
        ctx = 0
        if budget >= len(running) and bm.num_free >= len(running):
            # common case: room for everyone (at most one new block each), no preemption possible
            for seq in running:
                nt = seq.num_tokens
                if nt - seq.num_computed != 1 or nt == seq.prompt_len:
                    prefilling.append(seq)
                    continue
                if not (nt - 1) % bs:
                    bm.append_block(seq)
                decodes.append(seq)
                ctx += nt
            budget -= len(decodes)
        else:
            i = 0
            while i < len(running) and budget >= 1:
                seq = running[i]
                i += 1
                nt = seq.num_tokens
                if nt - seq.num_computed != 1 or nt == seq.prompt_len:
                    prefilling.append(seq)
                    continue
                if not (nt - 1) % bs and not self._reserve(seq, 1):
                    break                                       # seq itself was the preemption victim
                decodes.append(seq)
                ctx += nt
                budget -= 1
        batch.decode_context += ctx
        return prefilling, budget

    def postprocess(self, batch: Batch, result: StepResult, now: float) -> list[Sequence]:
        """Advance ``batch`` by one iteration that ended at ``now``; returns the sequences that
        left this worker (finished, or handed off)."""
        tokens = result.tokens
        k = 0
        done = []
        bm = self.bm
        for seq, n in batch.prefills:
            seq.num_computed += n
            if bm.enable_prefix_cache:
                bm.register_prefix(seq)
            if seq.num_computed == seq.num_tokens:
                if self._emit(seq, tokens[k] if tokens is not None else None, now):
                    done.append(seq)
                k += 1
        if tokens is None:
            # the simulator's decodes: the per-token hot path of every simulation
            for seq in batch.decodes:
                seq.num_computed += 1
                seq.num_tokens += 1
                seq.token_times.append(now)
                if seq.num_tokens >= seq.finish_at:
                    self._finish(seq, now)
                    done.append(seq)
        else:
            for seq, tok in zip(batch.decodes, tokens[k:]):
                seq.output_ids.append(tok)
                seq.num_computed += 1
                seq.num_tokens += 1
                seq.token_times.append(now)
                if seq.num_tokens >= seq.finish_at or tok in seq.request.stop_ids:
                    self._finish(seq, now)
                    done.append(seq)
        if done:
            gone = set(map(id, done))
            self.running = [s for s in self.running if id(s) not in gone]
        return done

    def _emit(self, seq: Sequence, token: int | None, now: float) -> bool:
        """A prefill reached the end of its tokens: append the sampled token; True when the
        sequence leaves this worker."""
        seq.num_tokens += 1
        seq.token_times.append(now)
        stop = False
        if token is not None:
            seq.output_ids.append(token)
            stop = token in seq.request.stop_ids
        if stop or seq.num_tokens >= seq.finish_at:
            self._finish(seq, now)
            return True
        return False

    def _finish(self, seq: Sequence, now: float) -> None:
        seq.status = Status.FINISHED
        seq.finish_time = now
        self.bm.free(seq)
