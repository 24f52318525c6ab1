"""A worker's steady decodes as aggregates: the ``DecodeGroup``.

Most iterations of a simulation decode every running sequence once and change nothing else, so
walking each sequence every step (count it, add its context, bump its token counts, append its
token time) is the whole cost of a simulation. A ``DecodeGroup`` holds those sequences as totals
instead, and keeps them exact:

- a member's token counts are implied: it joined at group step ``g0`` holding ``nt0`` tokens, so
  after ``step`` group steps it holds ``nt0 + step - g0`` (written back when it leaves);
- the batch's shape is ``n`` decodes over ``ctx`` context tokens, both updated by arithmetic
  (``ctx += n`` per step);
- every group step appends one float to ``times``; a member's token times are the slice
  ``times[g0:g_leave]`` (``Sequence.token_times`` builds the list on demand);
- a member opens a KV block every ``block_size`` steps, at the steps congruent to its residue
  ``(g0 + 1 - nt0) mod block_size``: a step opens ``phase_n[step % block_size]`` blocks, promised
  by the block manager as a count (``BlockManager.reserve``) and named only when the member leaves
  (``claim``); where promising would need a cached prefix evicted, that residue's members take
  named blocks at once, as the per-sequence path would;
- a member finishes at the step where it reaches ``finish_at``, known when it joins: it waits in
  a bucket keyed by that step (``finish``) and costs nothing in between.

The scheduler uses a group only on a clock that reads batch totals (the cost model) and only
while no decode can be refused memory (every running sequence can get a block); otherwise it
dissolves the group (writing every member's counts back) and runs the per-sequence path, which is
also what ``--exact-steps`` runs throughout. Both paths allocate the same blocks at the same steps
and free finished sequences in the same order, so they give identical runs.
"""

from __future__ import annotations

from array import array

from ..request import Sequence


class DecodeGroup:
    __slots__ = ("times", "step", "n", "ctx", "finish", "members", "inflight", "block_size", "bm",
                 "phase_n", "phase", "_epoch")

    def __init__(self, block_manager):
        self.bm = block_manager
        self.block_size = bs = block_manager.block_size
        self.times = array("d")    # end time of every group step of this worker
        self.step = 0              # group steps completed
        self.n = 0                 # members
        self.ctx = 0               # sum of the members' num_tokens (the decode batch's KV context)
        self.finish: dict[int, list] = {}     # step count -> [(seq, epoch)] finished once reached
        self.members: dict[int, Sequence] = {}
        self.phase_n = [0] * bs    # members per block-boundary residue
        self.phase: list[dict[int, Sequence]] = [{} for _ in range(bs)]
        self.inflight = False      # a group step has been scheduled and not yet postprocessed
        self._epoch = 0

    def join(self, seq: Sequence) -> None:
        """``seq`` (decoding: KV for all but its newest token) decodes from the next group step on."""
        g0 = self.step + 1 if self.inflight else self.step
        nt0 = seq.num_tokens
        self._epoch += 1
        ep = seq._gep = self._epoch
        seq._group, seq._g0, seq._nt0, seq._gblk = self, g0, nt0, 0
        self.members[id(seq)] = seq
        self.n += 1
        self.ctx += nt0
        self.finish.setdefault(g0 + seq.finish_at - nt0, []).append((seq, ep))
        r = (g0 + 1 - nt0) % self.block_size        # steps whose token opens a block
        self.phase_n[r] += 1
        self.phase[r][id(seq)] = seq

    def _grown(self, seq: Sequence, upto: int) -> int:
        """Blocks ``seq`` has opened in group steps ``[g0, upto)``."""
        bs = self.block_size
        first = seq._g0 + (1 - seq._nt0) % bs
        return 0 if first >= upto else (upto - 1 - first) // bs + 1

    def _name_blocks(self, seq: Sequence, upto: int) -> None:
        k = self._grown(seq, upto) - seq._gblk
        if k:
            self.bm.claim(seq, k)
            seq._gblk += k

    def _leave(self, seq: Sequence, upto: int) -> None:
        """Write ``seq``'s counts and blocks back as of ``upto`` group steps, close its token-time piece."""
        self._name_blocks(seq, upto)
        nt = seq._nt0 + upto - seq._g0
        seq.num_tokens, seq.num_computed = nt, nt - 1
        if upto > seq._g0:
            seq._times.append((self.times, seq._g0, upto))
        r = (seq._g0 + 1 - seq._nt0) % self.block_size
        self.phase_n[r] -= 1
        del self.phase[r][id(seq)]
        seq._gep = 0
        seq._group = None
        del self.members[id(seq)]
        self.n -= 1
        self.ctx -= nt

    def leave(self, seq: Sequence) -> None:
        self._leave(seq, self.step)

    def open_blocks(self) -> None:
        """The blocks this step's tokens open (the caller checked there are enough)."""
        r = self.step % self.block_size
        m = self.phase_n[r]
        if m and not self.bm.reserve(m):
            # promising would evict cached prefixes: name the blocks now, as the per-sequence path does
            for seq in self.phase[r].values():
                self._name_blocks(seq, self.step)
                self.bm.append_block(seq)
                seq._gblk += 1

    def advance(self, n_decoded: int, now: float) -> list[Sequence]:
        """A group step of ``n_decoded`` members ended at ``now``; returns the members that have
        all their tokens now, in admission order (as the per-sequence path frees them)."""
        self.times.append(now)
        self.step += 1
        self.ctx += n_decoded
        self.inflight = False
        bucket = self.finish.pop(self.step, None)
        if bucket is None:
            return []
        done = [seq for seq, ep in bucket if seq._gep == ep]
        if len(done) > 1:
            done.sort(key=_rank)
        for seq in done:
            self._leave(seq, self.step)
        return done

    def dissolve(self) -> None:
        """Every member leaves (its counts and blocks written back): the per-sequence path takes over."""
        for seq in list(self.members.values()):
            self._leave(seq, self.step)
        self.finish.clear()


def _rank(seq: Sequence) -> int:
    return seq._rank
