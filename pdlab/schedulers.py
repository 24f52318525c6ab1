"""Scheduling policies: which tokens of which sequences run in the next iteration.

Every policy has the same three calls, used identically by the simulator and the real engine:

    add(seq) -> bool                 queue a new sequence (False: rejected, ``seq.reject_reason`` says why)
    schedule(now) -> Batch           pick the next iteration (allocating its KV blocks)
    postprocess(batch, result, now)  advance token counts, emit tokens, free finished sequences

Policies:
    AggregatedScheduler   continuous batching, prefill-priority: waiting prompts are prefilled whole,
                          in an iteration of their own, before running streams decode again (vLLM v0/Orca)
    ChunkedScheduler      a token budget per iteration: decodes first, then ongoing prefill chunks,
                          then new prompts fill what is left (Sarathi-Serve stall-free batching)
    PrefillOnlyScheduler  disaggregated prefill pool: stops each sequence after its first token and
                          hands it off for KV transfer
    DecodeOnlyScheduler   disaggregated decode pool: accepts sequences whose KV arrived over the link

Memory pressure is handled by preemption with recompute: the most recently admitted sequence loses
its KV and goes back to the front of the queue; nothing is ever dropped.
"""

from __future__ import annotations

from collections import deque

from .kv import BlockManager
from .request import Batch, Sequence, Status, StepResult

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

    def add(self, seq: Sequence) -> bool:
        need = self.max_blocks_needed(seq)
        if need > self.bm.num_blocks:
            seq.status = Status.REJECTED
            seq.reject_reason = (f"needs {need} KV blocks ({seq.prompt_len} prompt + {seq.max_new_tokens} new "
                                 f"tokens) but the cache holds {self.bm.num_blocks}")
            return False
        seq.status = Status.WAITING
        self.waiting.append(seq)
        return True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def load(self) -> int:
        """Unfinished sequences here: what the least-loaded router compares."""
        return len(self.waiting) + len(self.running)

    def _can_admit(self, seq: Sequence, n: int) -> bool:
        if len(self.running) >= self.max_num_seqs:
            return False
        need = self.bm.blocks_needed(seq, n)
        # an empty worker admits whatever fits at all, so progress is guaranteed
        return need <= self.bm.num_free - (self.watermark if self.running else 0)

    def _admit(self, seq: Sequence, now: float) -> None:
        self.waiting.popleft()
        seq.status = Status.RUNNING
        if seq.first_scheduled is None:
            seq.first_scheduled = now
        self.running.append(seq)

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
        # decodes: the per-token hot path of every simulation
        if tokens is not None:
            for seq, tok in zip(batch.decodes, tokens[k:]):
                seq.output_ids.append(tok)
        for seq in batch.decodes:
            seq.num_computed += 1
            seq.num_tokens += 1
            seq.token_times.append(now)
            if seq.num_tokens >= seq.finish_at:
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
        if token is not None:
            seq.output_ids.append(token)
        if seq.num_tokens >= seq.finish_at:
            self._finish(seq, now)
            return True
        return False

    def _finish(self, seq: Sequence, now: float) -> None:
        seq.status = Status.FINISHED
        seq.finish_time = now
        self.bm.free(seq)


class AggregatedScheduler(Scheduler):
    """Prefill-priority continuous batching: whole prompts, in iterations of their own."""

    name = "aggregated"

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256, max_batched_tokens: float = INF):
        super().__init__(block_manager, max_num_seqs)
        if max_batched_tokens < 1:
            raise ValueError(f"max_batched_tokens must be >= 1, got {max_batched_tokens}")
        self.max_batched_tokens = max_batched_tokens

    def schedule(self, now: float) -> Batch:
        batch = Batch()
        # 1. prompts first: every stream waits while they prefill (the interference lab 04 shows)
        budget = self.max_batched_tokens
        while self.waiting:
            seq = self.waiting[0]
            self.bm.match_prefix(seq)
            n = seq.num_tokens - seq.num_computed
            if batch.prefills and n > budget:
                break
            if not self._can_admit(seq, n):
                break
            self._admit(seq, now)
            self.bm.allocate(seq, n)
            batch.add_prefill(seq, n)
            budget -= n
        if batch:
            return batch
        # 2. no prompt could start: every running stream decodes one token
        self._schedule_decodes(batch, INF)
        return batch


class ChunkedScheduler(Scheduler):
    """Sarathi-Serve: at most ``token_budget`` tokens per iteration; decodes first, then ongoing
    prefill chunks, then new prompts. With an unlimited budget no prompt is ever split."""

    name = "chunked"

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256, token_budget: float = 512):
        super().__init__(block_manager, max_num_seqs)
        if not token_budget >= 1:
            raise ValueError(f"token budget (chunk size) must be >= 1, got {token_budget}")
        self.token_budget = token_budget

    def schedule(self, now: float) -> Batch:
        batch = Batch()
        budget = self.token_budget
        # 1. decodes (one token each): stall-free, they never wait behind a prompt
        prefilling, budget = self._schedule_decodes(batch, budget)
        # 2. continue prompts already being prefilled (chunk by chunk)
        for seq in prefilling:
            if budget < 1:
                break
            if seq.status is not Status.RUNNING:   # preempted while reserving decodes
                continue
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._reserve(seq, n, batch):
                break
            batch.add_prefill(seq, int(n))
            budget -= n
        # 3. admit new prompts into the rest of the budget
        while self.waiting and budget >= 1:
            seq = self.waiting[0]
            self.bm.match_prefix(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._can_admit(seq, n):
                break
            self._admit(seq, now)
            self.bm.allocate(seq, n)
            batch.add_prefill(seq, int(n))
            budget -= n
        return batch


class PrefillOnlyScheduler(ChunkedScheduler):
    """Disaggregated prefill pool: computes prompts (chunked by ``token_budget``), emits the first
    token, then holds the KV (status TRANSFERRING) until the cluster has moved it."""

    name = "prefill-only"

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256, token_budget: float = 8192):
        super().__init__(block_manager, max_num_seqs, token_budget)
        self.handoff: list[Sequence] = []     # sequences whose KV is ready to leave

    def max_blocks_needed(self, seq: Sequence) -> int:
        return self.bm.blocks_for(seq.num_tokens)   # only the prompt's KV lives here

    def _can_admit(self, seq: Sequence, n: int) -> bool:
        # admit only a prompt whose whole KV fits now: blocks held by sequences waiting for the
        # link must not make a half-computed prompt preempt itself over and over
        return super()._can_admit(seq, seq.num_tokens - seq.num_computed)

    def _emit(self, seq: Sequence, token: int | None, now: float) -> bool:
        if super()._emit(seq, token, now):
            return True                           # max_new_tokens == 1: done at the first token
        seq.status = Status.TRANSFERRING
        self.handoff.append(seq)
        return True                               # leaves the running list; blocks stay held

    def release(self, seq: Sequence) -> None:
        """The KV has crossed the link: free the blocks here."""
        self.bm.free(seq)


class DecodeOnlyScheduler(ChunkedScheduler):
    """Disaggregated decode pool: sequences arrive with their prompt's KV (moved over the link)
    and only decode. A sequence preempted here under memory pressure is recomputed locally (a
    prefill on the decode worker: the rare stall disaggregation cannot remove)."""

    name = "decode-only"

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256, token_budget: float = INF):
        super().__init__(block_manager, max_num_seqs, token_budget)

    def reserve_for_transfer(self, seq: Sequence) -> list[int] | None:
        """Allocate blocks for ``seq``'s incoming KV; None if memory is short (the transfer waits)."""
        need = self.bm.blocks_for(seq.num_computed)
        if len(self.running) >= self.max_num_seqs or need > self.bm.num_free - (self.watermark if self.running else 0):
            return None
        return self.bm.take(need)

    def accept(self, seq: Sequence, block_table: list[int]) -> None:
        """The KV has arrived: ``seq`` joins the running decodes."""
        seq.block_table = block_table
        seq.status = Status.RUNNING
        self.running.append(seq)
