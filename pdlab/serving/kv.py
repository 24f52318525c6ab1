"""Paged KV cache bookkeeping: fixed-size blocks, block tables, reference counts and a
hash-chained prefix cache with LRU eviction (the shape of vLLM's and nano-vllm's BlockManager).

The BlockManager only counts and names blocks; the bytes live in the executor (real tensors) or
nowhere (the cost model). A block is in exactly one of three states:

- free: in ``_free`` (no content worth keeping);
- used: ``ref[b] > 0`` (in some sequence's block table);
- cached: ``ref[b] == 0`` but its content is a known prefix (in ``_lru``): reusable by a later
  request with the same prefix, evicted oldest-first when a fresh block is needed.

Two optional attachments (set by the cluster): ``publish(tier, kind, hash)`` hears every prefix
block stored on or removed from this cache (the KV events a KV-aware router indexes, so the router
never reads a block manager), and ``host``, a ``pdlab.serving.offload.HostTier`` that keeps evicted
prefix blocks in host memory and hands them back when reloading beats recomputing.
"""

from __future__ import annotations

from collections import OrderedDict

from ..request import Sequence


def chain_hashes(token_ids, block_size: int, parent: int = 0) -> tuple[int, ...]:
    """Hash of each full block, chained with its parent so equal hashes mean equal prefixes."""
    out, h = [], parent
    for i in range(0, len(token_ids) - block_size + 1, block_size):
        h = hash((h, tuple(token_ids[i:i + block_size])))
        out.append(h)
    return tuple(out)


def expand_hashes(ids, hash_block: int, prompt_len: int, block_size: int) -> tuple[int, ...]:
    """Chained hashes of ``block_size``-token blocks from ids of coarser ``hash_block``-token
    blocks (a trace's prefix ids): block k lies in coarse block ``k * block_size // hash_block``."""
    out, h = [], 0
    for k in range(prompt_len // block_size):
        j = k * block_size // hash_block
        if j >= len(ids):
            break
        h = hash((h, ids[j], k * block_size % hash_block))
        out.append(h)
    return tuple(out)


def prefix_hashes(seq: Sequence, block_size: int) -> tuple[int, ...]:
    """The chained hashes of ``seq``'s full prompt blocks (cached on the sequence)."""
    if seq._hashes is None:
        r = seq.request
        if r.block_hashes is not None:
            seq._hashes = expand_hashes(r.block_hashes, r.hash_block, r.prompt_len, block_size)
        elif r.prompt_ids is not None:
            seq._hashes = chain_hashes(r.prompt_ids, block_size)
        else:
            seq._hashes = ()
    return seq._hashes


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_cache: bool = False):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"KV cache needs >= 1 block of >= 1 token (got {num_blocks} x {block_size})")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_cache = enable_prefix_cache
        self.ref = [0] * num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))     # a stack: pop() gives block 0 first
        self._lru: OrderedDict[int, None] = OrderedDict()     # cached blocks, oldest first
        self._hash_of: dict[int, int] = {}                    # block -> prefix hash
        self._block_of: dict[int, int] = {}                   # prefix hash -> block
        # blocks promised to decoding sequences without an id yet (a DecodeGroup's block growth,
        # named when the sequence leaves the group): counted out of ``_free``
        self.reserved = 0
        self.hits = 0                                         # prefix-cache hit tokens
        self.hits = 0                                         # prefix-cache hit tokens (device)
        self.host_hits = 0                                    # ... reloaded from the host tier
        self.queries = 0                                      # prompt tokens looked up
        self.publish = None                                   # publish(tier, kind, hash): KV events
        self.host = None                                      # HostTier: evicted prefixes go there

    # ---- capacity -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks that can be handed out now (free + evictable cached)."""
        return len(self._free) + len(self._lru) - self.reserved

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def blocks_needed(self, seq: Sequence, n_new: int) -> int:
        """Extra blocks ``seq`` needs to hold KV for ``n_new`` more tokens."""
        return max(0, -(-(seq.num_computed + n_new) // self.block_size) - len(seq.block_table))

    def can_allocate(self, seq: Sequence, n_new: int) -> bool:
        return self.blocks_needed(seq, n_new) <= self.num_free

    # ---- allocation -----------------------------------------------------------------------
    def _take(self) -> int:
        if len(self._free) > self.reserved:
            b = self._free.pop()
        else:  # evict the least recently used cached prefix block
            b, _ = self._lru.popitem(last=False)
            h = self._hash_of.pop(b)
            del self._block_of[h]
            if self.publish is not None:
                self.publish("device", "removed", h)
            if self.host is not None:
                self.host.put(h)
        self.ref[b] = 1
        return b

    def take(self, n: int) -> list[int]:
        """Hand out ``n`` blocks (ref count 1): free ones first, in one slice, in the order
        popping them one by one would give; then cached prefix blocks, least recently used first."""
        if n > self.num_free:
            raise RuntimeError(f"needs {n} blocks, {self.num_free} free")
        free = self._free
        k = min(n, len(free) - self.reserved)
        got = free[len(free) - k:]
        del free[len(free) - k:]
        got.reverse()
        ref = self.ref
        for b in got:
            ref[b] = 1
        got.extend(self._take() for _ in range(n - k))
        return got

    def allocate(self, seq: Sequence, n_new: int) -> None:
        """Grow ``seq.block_table`` to hold ``n_new`` more tokens. Caller checked capacity."""
        need = self.blocks_needed(seq, n_new)
        if need:
            seq.block_table.extend(self.take(need))

    def reserve(self, n: int) -> bool:
        """Promise ``n`` free blocks without naming them (False, and nothing promised, if fewer
        than ``n`` are free without evicting a cached prefix)."""
        if len(self._free) - self.reserved < n:
            return False
        self.reserved += n
        return True

    def claim(self, seq: Sequence, n: int) -> None:
        """Name ``n`` of the promised blocks and give them to ``seq``."""
        self.reserved -= n
        seq.block_table.extend(self.take(n))

    def append_block(self, seq: Sequence) -> None:
        """One more block for ``seq`` (a decode crossing a block boundary). Caller checked room."""
        seq.block_table.append(self._take())

    def give_back(self, blocks: list[int]) -> None:
        """Return blocks taken with ``take`` that never joined a block table (no prefix content)."""
        for b in blocks:
            self.ref[b] = 0
        self._free.extend(reversed(blocks))

    def free(self, seq: Sequence) -> None:
        """Drop ``seq``'s references; blocks holding a known prefix stay cached (LRU)."""
        if not self._hash_of:     # no prefix blocks anywhere: nothing is shared, every ref is 1
            ref = self.ref
            for b in seq.block_table:
                ref[b] = 0
            self._free.extend(reversed(seq.block_table))
            seq.block_table = []
            return
        for b in reversed(seq.block_table):   # reversed: a prefix's tail is evicted before its head
            r = self.ref[b] - 1
            self.ref[b] = r
            if r == 0:
                if b in self._hash_of:
                    self._lru[b] = None
                else:
                    self._free.append(b)
        seq.block_table = []

    # ---- prefix cache ---------------------------------------------------------------------
    def prefix_hashes(self, seq: Sequence) -> tuple[int, ...]:
        return prefix_hashes(seq, self.block_size)

    def match_prefix(self, seq: Sequence) -> int:
        """Attach cached blocks that hold ``seq``'s prompt prefix; returns tokens reused.

        Called once when a sequence with no KV is admitted. At least one prompt token is
        always left to compute, so the model still produces the first output token.
        """
        if not self.enable_prefix_cache or seq.block_table or seq.num_computed:
            return 0
        hashes = self.prefix_hashes(seq)
        max_blocks = (seq.prompt_len - 1) // self.block_size
        self.queries += seq.prompt_len
        table = seq.block_table
        for h in hashes[:max_blocks]:
            b = self._block_of.get(h)
            if b is None:
                break
            if self.ref[b] == 0:
                del self._lru[b]
            self.ref[b] += 1
            table.append(b)
        n = len(table) * self.block_size
        self.hits += n
        seq.num_reloaded, seq.reload_s = 0, 0.0
        host = self.host
        if host is not None and len(table) < max_blocks:
            # the device match ended: continue in host memory, if reloading beats recomputing
            k = len(table)
            j = k
            while j < max_blocks and host.has(hashes[j]):
                j += 1
            m = (j - k) * self.block_size
            if m and j - k <= len(self._free) + len(self._lru) and host.worth(m, n):
                for h in hashes[k:j]:               # first: taking blocks may offload more and evict
                    host.touch(h)
                table.extend(self.take(j - k))      # fresh blocks; named once the step computed them
                seq.num_reloaded, seq.reload_s = m, host.transfer_s(m)
                self.host_hits += m
                n += m
        seq.num_computed = seq.num_cached = n
        return n

    def unmatch(self, seq: Sequence) -> None:
        """Undo ``match_prefix`` for a sequence that was not admitted after all: its matched
        blocks go back to the cache and the lookup is not counted."""
        if not self.enable_prefix_cache or seq.num_computed != seq.num_cached:
            return
        self.hits -= seq.num_cached - seq.num_reloaded
        self.host_hits -= seq.num_reloaded
        self.queries -= seq.prompt_len
        self.free(seq)
        seq.num_computed = seq.num_cached = seq.num_reloaded = 0
        seq.reload_s = 0.0

    def register_prefix(self, seq: Sequence) -> None:
        """After a step: name the prompt blocks ``seq`` has completely computed."""
        if not self.enable_prefix_cache:
            return
        hashes = self.prefix_hashes(seq)
        full = min(seq.num_computed, seq.prompt_len) // self.block_size
        for i in range(min(full, len(hashes))):
            b = seq.block_table[i]
            if b in self._hash_of:
                continue
            h = hashes[i]
            if h in self._block_of:   # an identical block computed concurrently: keep the first
                continue
            self._hash_of[b] = h
            self._block_of[h] = b
            if self.publish is not None:
                self.publish("device", "stored", h)

    def check(self) -> None:
        """Invariant check used by tests: every block is in exactly one state."""
        free, lru = set(self._free), set(self._lru)
        assert len(free) == len(self._free), "duplicate block in free list"
        assert not free & lru, "block both free and cached"
        for b in range(self.num_blocks):
            states = (b in free) + (b in lru) + (self.ref[b] > 0)
            assert states == 1, f"block {b}: free={b in free} cached={b in lru} ref={self.ref[b]}"
