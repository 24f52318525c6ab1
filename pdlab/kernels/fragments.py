"""Which thread of a warp holds which matrix element: the register layouts ("fragments") of the
tensor-core instruction ``mma.sync.aligned.m16n8k16`` (fp16/bf16 inputs, fp32 accumulators) and
of ``ldmatrix``, as the PTX ISA defines them. Plain numpy, no numba: the simulator's emulation of
those instructions (``_mma.py``), lab 02's figure (``pdlab.viz.kernels``) and the tests all read
the layouts from here, so there is one statement of them.

    D[16x8] = A[16x16] @ B[16x8] + C[16x8]       one warp, 32 lanes

For lane ``l``: ``group = l >> 2`` (0..7) and ``tig = l % 4`` (thread in group, 0..3).

- A (row-major, 16 x 16): 4 registers a0..a3 of 32 bits, each two 16-bit values (low half first):
  a0 = A[group, 2 tig : 2 tig + 2],      a1 = A[group + 8, 2 tig : 2 tig + 2],
  a2 = A[group, 2 tig + 8 : 2 tig + 10], a3 = A[group + 8, 2 tig + 8 : 2 tig + 10].
- B (16 x 8, "col": each column contiguous along k): 2 registers, each two values along k:
  b0 = B[2 tig : 2 tig + 2, group],      b1 = B[2 tig + 8 : 2 tig + 10, group].
- C and D (16 x 8, fp32): 4 registers of one value each:
  c0, c1 = C[group, 2 tig], C[group, 2 tig + 1];  c2, c3 = C[group + 8, 2 tig], C[group + 8, 2 tig + 1].

So a row of C is held by the 4 lanes of one group (a "quad"): row statistics of a C tile (a
softmax's max and sum) are reduced over a quad with two shuffles (lane ^ 1, lane ^ 2).
And C of two n-tiles side by side (16 x 16) has exactly A's layout: c0,c1 of the left tile are
a0, c2,c3 are a1, the right tile's are a2, a3. A product P = softmax(S) computed in C registers
is therefore, once packed to 16 bits, the A operand of the next product P @ V, without moving
through shared memory (FlashAttention-2 does this).

``ldmatrix.sync.aligned.m8n8.x4.b16`` loads four 8 x 8 matrices of 16-bit values from shared
memory: lanes 8 j .. 8 j + 7 give the addresses of the 8 rows (16 bytes each) of matrix j, and
lane l receives, in register j, row ``l >> 2`` of matrix j, values ``2 (l % 4)`` and ``+1``:
the A/B/C pattern above. With ``.trans`` it receives column ``l >> 2`` instead, rows
``2 (l % 4)`` and ``+1``: the matrix transposed on the way, which turns V stored [key][dim]
(row-major) into the "col" B operand of P @ V.
"""

from __future__ import annotations

import numpy as np

M, N, K = 16, 8, 16


def a_coords(lane: int) -> list:
    """[(row, col) of the low half, (row, col) of the high half] of a0..a3 for ``lane``."""
    g, t = lane >> 2, lane & 3
    out = []
    for reg in range(4):
        r = g + 8 * (reg & 1)
        c = 2 * t + 8 * (reg >> 1)
        out.append([(r, c), (r, c + 1)])
    return out


def b_coords(lane: int) -> list:
    """[(k, n) of the low half, (k, n) of the high half] of b0, b1 for ``lane``."""
    g, t = lane >> 2, lane & 3
    return [[(2 * t + 8 * reg, g), (2 * t + 8 * reg + 1, g)] for reg in range(2)]


def c_coords(lane: int) -> list:
    """(row, col) of c0..c3 (and d0..d3) for ``lane``."""
    g, t = lane >> 2, lane & 3
    return [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]


def ldmatrix_coords(lane: int, trans: bool = False) -> list:
    """[(row, col) of the low half, (row, col) of the high half] that ``lane`` receives from each
    8 x 8 matrix it loads (the same for all four of ``.x4``), in the matrix as stored."""
    r, c = lane >> 2, 2 * (lane & 3)
    if trans:
        return [(c, r), (c + 1, r)]
    return [(r, c), (r, c + 1)]


def owners(which: str) -> np.ndarray:
    """The lane holding each element: [16, 16] for "A", [16, 8] (k, n) for "B", [16, 8] for "C"."""
    shape = {"A": (M, K), "B": (K, N), "C": (M, N)}[which]
    out = np.full(shape, -1, dtype=int)
    for lane in range(32):
        if which == "A":
            cells = [rc for reg in a_coords(lane) for rc in reg]
        elif which == "B":
            cells = [kn for reg in b_coords(lane) for kn in reg]
        else:
            cells = c_coords(lane)
        for rc in cells:
            out[rc] = lane
    return out


def registers(which: str) -> np.ndarray:
    """The register index (a0..a3 -> 0..3, b0/b1 -> 0/1, c0..c3 -> 0..3) holding each element,
    shaped as ``owners``."""
    shape = {"A": (M, K), "B": (K, N), "C": (M, N)}[which]
    out = np.full(shape, -1, dtype=int)
    for lane in range(32):
        if which == "A":
            for reg, cells in enumerate(a_coords(lane)):
                for rc in cells:
                    out[rc] = reg
        elif which == "B":
            for reg, cells in enumerate(b_coords(lane)):
                for kn in cells:
                    out[kn] = reg
        else:
            for reg, rc in enumerate(c_coords(lane)):
                out[rc] = reg
    return out


def _index_tables():
    a = np.array([a_coords(lane) for lane in range(32)])    # [32, 4 regs, 2 halves, (row, col)]
    b = np.array([b_coords(lane) for lane in range(32)])    # [32, 2 regs, 2 halves, (k, n)]
    c = np.array([c_coords(lane) for lane in range(32)])    # [32, 4 regs, (row, col)]
    return a, b, c


_A, _B, _C = _index_tables()


def mma_reference(a_regs, b_regs, c_regs, unpack) -> np.ndarray:
    """What one ``mma.m16n8k16`` returns to every lane, from every lane's registers:
    a_regs [32, 4], b_regs [32, 2] (32-bit words of two 16-bit values), c_regs [32, 4] fp32;
    ``unpack(words) -> (low, high)`` fp32 arrays of the words' shape. Returns d [32, 4] fp32
    (products exact, sums in fp64 rounded once to fp32: the tensor cores accumulate in fp32)."""
    alo, ahi = unpack(np.asarray(a_regs, dtype=np.int64))
    blo, bhi = unpack(np.asarray(b_regs, dtype=np.int64))
    A = np.zeros((M, K), np.float64)
    B = np.zeros((K, N), np.float64)
    C = np.zeros((M, N), np.float64)
    A[_A[..., 0, 0], _A[..., 0, 1]] = alo
    A[_A[..., 1, 0], _A[..., 1, 1]] = ahi
    B[_B[..., 0, 0], _B[..., 0, 1]] = blo
    B[_B[..., 1, 0], _B[..., 1, 1]] = bhi
    C[_C[..., 0], _C[..., 1]] = np.asarray(c_regs, dtype=np.float32)
    D = (A @ B + C).astype(np.float32)
    return D[_C[..., 0], _C[..., 1]]                          # [32, 4]
