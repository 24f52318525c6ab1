"""The scheduling policies, all built on ``pdlab.serving.scheduler.Scheduler``:

    AggregatedScheduler   continuous batching, prefill-priority: waiting prompts are prefilled whole,
                          in an iteration of their own, before running streams decode again (vLLM v0)
    ChunkedScheduler      a token budget per iteration: decodes first, then ongoing prefill chunks,
                          then new prompts fill what is left (Sarathi-Serve stall-free batching)
    PrefillOnlyScheduler  disaggregated prefill pool: stops each sequence after its first token and
                          hands it off for KV transfer
    DecodeOnlyScheduler   disaggregated decode pool: accepts sequences whose KV arrived over the link
"""

from __future__ import annotations

from ..request import Batch, Sequence, Status
from .kv import BlockManager
from .scheduler import INF, Scheduler


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
        self._admit_waiting(batch, self.max_batched_tokens, now, whole=True)
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
        self.decode_budget = token_budget

    def schedule(self, now: float) -> Batch:
        batch = Batch()
        # 1. decodes (one token each): stall-free, they never wait behind a prompt
        prefilling, budget = self._schedule_decodes(batch, self.token_budget)
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
        self._admit_waiting(batch, budget, now, whole=False)
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
            return True                           # done at the first token (one-token answer, or a stop token)
        seq.status = Status.TRANSFERRING
        self.handoff.append(seq)
        return True                               # leaves the running list; blocks stay held

    def take_handoffs(self) -> list[Sequence]:
        """The sequences whose KV became ready to leave since the last call."""
        out, self.handoff = self.handoff, []
        return out

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

    def rejects(self, seq: Sequence) -> str | None:
        """A request must be able to finish on a decode worker: checked when it arrives, before
        a prefill worker spends time on it."""
        need = self.max_blocks_needed(seq)
        if need > self.bm.num_blocks:
            return f"needs {need} KV blocks on a decode worker but its cache holds {self.bm.num_blocks}"
        return None

    def reserve_for_transfer(self, seq: Sequence, num_tokens: int | None = None) -> list[int] | None:
        """Allocate blocks for ``seq``'s incoming KV (``num_tokens`` of it, default what is computed
        now: a real prefill worker reserves before the prompt's last chunk runs, to stream the KV
        layer by layer); None if memory is short (the transfer waits)."""
        need = self.bm.blocks_for(seq.num_computed if num_tokens is None else num_tokens)
        if not self._has_room(need):
            return None
        return self.bm.take(need)

    def cancel_transfer(self, blocks: list[int]) -> None:
        """Blocks reserved for a sequence that will not decode here (its first token ended it)."""
        self.bm.give_back(blocks)

    def accept(self, seq: Sequence, block_table: list[int]) -> None:
        """The KV has arrived: ``seq`` joins the running decodes."""
        seq.block_table = block_table
        seq.status = Status.RUNNING
        self._add_running(seq)
        if self.bm.enable_prefix_cache:      # the prompt's KV is here now: a session's next turn can reuse it
            self.bm.register_prefix(seq)
        if self._formed:
            self.group.join(seq)
