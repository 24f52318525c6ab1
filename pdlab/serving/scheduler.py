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

With ``lazy`` set (the cluster sets it for the cost-model clock unless ``exact_steps``), the steady
decodes are kept as a ``DecodeGroup`` (``pdlab.serving.decoding``) instead of being walked one by
one; the per-sequence path below is the reference both must match.
"""

from __future__ import annotations

from collections import deque

from ..request import Batch, Sequence, Status, StepResult
from .decoding import DecodeGroup
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
        self.lazy = False                      # keep steady decodes as a DecodeGroup
        self.group = DecodeGroup(block_manager)
        self._formed = False                   # the group holds this worker's decoding sequences
        self.prefilling: list[Sequence] = []   # while formed: running sequences not in the group
        self._ranks = 0                        # admission counter (running order)

    def _add_running(self, seq: Sequence) -> None:
        self._ranks += 1
        seq._rank = self._ranks
        self.running.append(seq)

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
            self._add_running(seq)
            if self._formed:
                self.prefilling.append(seq)
            self.bm.allocate(seq, n)
            batch.add_prefill(seq, int(n))
            batch.reload_s += seq.reload_s
            budget -= n
        return budget

    def _preempt_tail(self) -> Sequence:
        victim = self.running.pop()
        if self._formed:
            if victim._gep:
                self.group.leave(victim)
            else:
                self.prefilling.remove(victim)
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
        if self.lazy:
            if budget >= len(running) and bm.num_free >= len(running):
                # no decode can be refused a block: the group decodes as one
                g = self.group
                if not self._formed:
                    self._form_group()
                if g.n:
                    g.open_blocks()
                    batch.group_decodes = g.n
                    batch.decode_context += g.ctx
                    g.inflight = True
                    budget -= g.n
                return list(self.prefilling), budget
            if self._formed:              # memory or budget is short: sequence by sequence
                self.group.dissolve()
                self._formed = False
                self.prefilling = []
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

    decode_budget: float = INF      # tokens the decodes of one iteration may use (chunked: its budget)

    def steady_decode(self) -> int:
        """If the next iteration is this worker's decode group alone (no prompt waiting or
        part-way, every decode sure of a block), schedule it exactly as ``schedule`` would: open
        the blocks its tokens need and return its number of decodes (their context is
        ``group.ctx``). Otherwise return 0 and change nothing."""
        g = self.group
        if not (self._formed and g.n and not self.waiting and not self.prefilling):
            return 0
        n = len(self.running)
        if self.decode_budget < n or self.bm.num_free < n:
            return 0
        g.open_blocks()
        return g.n

    def _form_group(self) -> None:
        g, pre = self.group, []
        for seq in self.running:
            nt = seq.num_tokens
            if nt - seq.num_computed != 1 or nt == seq.prompt_len:
                pre.append(seq)
            else:
                g.join(seq)
        self.prefilling = pre
        self._formed = True

    def postprocess(self, batch: Batch, result: StepResult, now: float) -> list[Sequence]:
        """Advance ``batch`` by one iteration that ended at ``now``; returns the sequences that
        left this worker (finished, or handed off)."""
        if self._formed:
            return self._postprocess_group(batch, now)
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
                seq._times.append(now)
                if seq.num_tokens >= seq.finish_at:
                    self._finish(seq, now)
                    done.append(seq)
        else:
            for seq, tok in zip(batch.decodes, tokens[k:]):
                seq.output_ids.append(tok)
                seq.num_computed += 1
                seq.num_tokens += 1
                seq._times.append(now)
                if seq.num_tokens >= seq.finish_at or tok in seq.request.stop_ids:
                    self._finish(seq, now)
                    done.append(seq)
        if done:
            gone = set(map(id, done))
            self.running = [s for s in self.running if id(s) not in gone]
        return done

    def _postprocess_group(self, batch: Batch, now: float) -> list[Sequence]:
        """``postprocess`` while the group is formed: the same accounting, in the same order
        (prefills, then the decodes that finished, in admission order)."""
        g, bm = self.group, self.bm
        finished = g.advance(batch.group_decodes, now) if batch.group_decodes else ()
        done = []
        for seq, n in batch.prefills:
            seq.num_computed += n
            if bm.enable_prefix_cache:
                bm.register_prefix(seq)
            nt = seq.num_tokens
            if seq.num_computed == nt:
                self.prefilling.remove(seq)
                if self._emit(seq, None, now):
                    done.append(seq)
                else:
                    g.join(seq)
            elif nt - seq.num_computed == 1 and nt != seq.prompt_len:
                # a recompute (after preemption) one token short: that token is a decode now
                self.prefilling.remove(seq)
                g.join(seq)
        for seq in finished:
            self._finish(seq, now)
            done.append(seq)
        running = self.running
        for seq in done:
            running.remove(seq)
        return done

    def _emit(self, seq: Sequence, token: int | None, now: float) -> bool:
        """A prefill reached the end of its tokens: append the sampled token; True when the
        sequence leaves this worker."""
        seq.num_tokens += 1
        seq._times.append(now)
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
