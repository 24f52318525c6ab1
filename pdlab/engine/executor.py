"""ModelExecutor: runs a ``Batch`` through the real model over a paged KV cache it owns.

One forward pass serves the whole iteration: prefill chunks and decodes are laid out flat
(prefill tokens first, then one token per decode), every layer writes the new K/V into its
slots, prefill chunks attend causally to their paged context (chunk included), decodes attend
to theirs. Greedy sampling returns one token per ``batch.sampling()`` entry, and the step is
timed (CUDA events on a GPU, ``time.perf_counter`` on the CPU), so the event loop advances by
measured seconds.

The scheduler's BlockManager has already allocated every block the batch needs; this class only
reads ``seq.block_table`` and never changes a sequence (``postprocess`` does that).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import PdlabError
from ..gcpause import gc_paused
from ..kernels import get_backend, reserve_wrappers, validate
from ..request import Batch, Sequence, StepResult
from .inputs import decode_inputs
from .model import AttentionMetadata, Model


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _token_ids(seq: Sequence, start: int, end: int) -> list[int]:
    """Token ids at positions [start, end): prompt, then generated tokens."""
    prompt = seq.request.prompt_ids
    if prompt is None:
        raise ValueError(f"request {seq.id} has no prompt ids: the model executor needs them")
    p = seq.prompt_len
    out = list(prompt[start:min(end, p)])
    if end > p:
        out += seq.output_ids[max(start, p) - p:end - p]
    return out


class ModelExecutor:
    """``run(batch) -> StepResult(seconds, tokens)`` with the real model.

    model       a ``pdlab.engine.model.Model`` (moved to ``device``)
    num_blocks  KV blocks this executor holds (the BlockManager's count)
    block_size  tokens per block
    backend     "torch" (gather + SDPA) or "numba" (the paged CUDA kernels, or the simulator)
    check_layers  re-validate the metadata in every layer's kernel calls as well (debugging; by
                default the step is validated once, on the host, in ``prepare``)
    graphs      decode-only steps replayed from CUDA graphs (``pdlab.engine.graphs``): "auto" (on
                for the numba backend on a GPU), True, False, or "eager" (the graphs' static,
                padded buffers run without capture: how the CPU tests that path)
    """

    def __init__(self, model: Model, num_blocks: int, block_size: int, backend: str = "torch",
                 device: str | torch.device | None = None, check_layers: bool = False, graphs="auto"):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval().fuse()
        self.cfg = cfg = model.cfg
        self.num_blocks, self.block_size = num_blocks, block_size
        self.backend_name = backend
        self.backend = get_backend(backend)
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        # one (k_cache, v_cache) pair per layer: [num_blocks, block_size, Hkv, D]
        self.kv_caches = [(torch.zeros(shape, dtype=cfg.torch_kv_dtype, device=self.device),
                           torch.zeros(shape, dtype=cfg.torch_kv_dtype, device=self.device))
                          for _ in range(cfg.num_layers)]
        for k, v in self.kv_caches[:1]:
            validate.check_cache(k, v)
        self.kv_bytes_per_token = cfg.kv_bytes_per_token()      # what a KV transfer moves per token
        self.check_layers = check_layers
        if backend == "numba":
            # up to 4 cache views per layer; room for two executors (disaggregated mode, one GPU)
            reserve_wrappers(2 * 4 * cfg.num_layers + 8)
        self.graphs = _decode_graphs(self, graphs)
        self._pinned: torch.Tensor | None = None       # reused pinned host buffer (GPU)
        self._copy_done = None                         # event: its last copy to the device ended
        self.steps = 0
        self.layer_done = None      # optional ``layer_done(i)`` for the next steps (per-layer KV send)

    @property
    def kv_cache_bytes(self) -> int:
        k, _ = self.kv_caches[0]
        return 2 * len(self.kv_caches) * k.numel() * k.element_size()

    # ---- inputs -------------------------------------------------------------------------------
    def _tables(self, seqs: list[Sequence], need: list[int]) -> np.ndarray:
        """[n, max_blocks] int32 block tables, padded with block 0 (never read past seq_lens)."""
        width = max(need)
        bt = np.zeros((len(seqs), width), dtype=np.int32)
        for i, (s, n) in enumerate(zip(seqs, need)):
            if len(s.block_table) < n:
                raise ValueError(f"sequence {s.id} needs {n} KV blocks but its block table has "
                                 f"{len(s.block_table)}: allocate before run()")
            bt[i, :n] = s.block_table[:n]
        return bt

    def _host_buffer(self, nbytes: int) -> torch.Tensor:
        """A uint8 host buffer for one step's metadata: pinned and reused on a GPU (the copy out
        of it is asynchronous, so the previous step's copy must have finished before it is
        overwritten), a fresh one on the CPU (there the device tensors *are* this memory)."""
        if self.device.type != "cuda":
            return torch.empty(nbytes, dtype=torch.uint8)
        if self._copy_done is not None:
            self._copy_done.synchronize()
        if self._pinned is None or self._pinned.numel() < nbytes:
            size = max(nbytes, 2 * (self._pinned.numel() if self._pinned is not None else 0), 1 << 16)
            try:
                self._pinned = torch.empty(size, dtype=torch.uint8, pin_memory=True)
            except RuntimeError:                    # no pinned memory here: a plain (synchronous) copy
                self._pinned = torch.empty(size, dtype=torch.uint8)
        return self._pinned

    def _upload(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        """All of a step's metadata arrays to the device in ONE host-to-device copy: packed into
        one byte buffer (each section 16-byte aligned), copied, then viewed back per array."""
        offs, total = [], 0
        for a in arrays:
            offs.append(total)
            total += -(-a.nbytes // 16) * 16
        host = self._host_buffer(max(total, 16))
        hb = host.numpy()
        for a, o in zip(arrays, offs):
            hb[o:o + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        dev = host[:max(total, 16)].to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            if self._copy_done is None:
                self._copy_done = torch.cuda.Event()
            self._copy_done.record()
        out = []
        for a, o in zip(arrays, offs):
            dt = torch.int64 if a.dtype == np.int64 else torch.int32
            out.append(dev[o:o + a.nbytes].view(dt).view(a.shape))
        return out

    def prepare(self, batch: Batch):
        """Flat inputs for one iteration: (input_ids [T], positions [T], AttentionMetadata,
        logits_index [S]) where S = len(batch.sampling()).

        Built on the host, validated there once for the whole step (``validate.check_step``:
        shapes, block tables, slots) and sent to the device in one copy; every layer then calls
        its kernels with ``check=False`` and the host-side sizes, so the layer loop never reads
        a value back from the GPU."""
        bs = self.block_size
        ids: list[int] = []
        pos_parts, slot_parts, logits_index = [], [], []
        p_seqs, p_need, cu, p_lens = [], [], [0], []
        for seq, n in batch.prefills:
            start, end = seq.num_computed, seq.num_computed + n
            if n < 1 or end > seq.num_tokens:
                raise ValueError(f"sequence {seq.id}: prefill of {n} tokens from {start} exceeds its {seq.num_tokens} tokens")
            ids += _token_ids(seq, start, end)
            pos_parts.append(np.arange(start, end))
            p_seqs.append(seq)
            p_need.append(-(-end // bs))
            cu.append(cu[-1] + n)
            p_lens.append(end)
            if end == seq.num_tokens:               # the chunk that completes the sequence samples
                logits_index.append(cu[-1] - 1)
        P = cu[-1]
        dec = decode_inputs(batch.decodes, bs) if batch.decodes else None   # vectorised
        if dec is not None:
            ids += dec.ids.tolist()
            pos_parts.append(dec.positions)
            logits_index += range(P, P + len(dec.ids))
        positions = np.concatenate(pos_parts).astype(np.int64)            # [T]
        for seq, part in zip(p_seqs, pos_parts):
            table = np.asarray(seq.block_table, dtype=np.int64)
            if len(table) * bs <= part[-1]:
                raise ValueError(f"sequence {seq.id}: position {part[-1]} needs block {part[-1] // bs} but its "
                                 f"block table has {len(table)}: allocate before run()")
            slot_parts.append(table[part // bs] * bs + part % bs)
        if dec is not None:
            slot_parts.append(dec.slots)
        slots = np.concatenate(slot_parts).astype(np.int64)               # [T]
        cu_a = np.asarray(cu, dtype=np.int32)                             # [n_p + 1]
        p_lens_a = np.asarray(p_lens, dtype=np.int32)                     # [n_p]
        p_bt = self._tables(p_seqs, p_need) if p_seqs else None           # [n_p, max_blocks]
        d_lens = dec.seq_lens.tolist() if dec is not None else []
        d_lens_a = dec.seq_lens if dec is not None else None              # [n_d]
        d_bt = dec.block_tables if dec is not None else None              # [n_d, max_blocks]
        # the per-layer checks, once for the step, on the host (no device read-back)
        validate.check_step(self.num_blocks, bs, len(ids), slots,
                            cu_a if p_seqs else None, p_lens_a, p_bt,
                            d_lens_a if d_lens else None, d_bt)
        arrays = [np.asarray(ids, dtype=np.int64), positions, slots, np.asarray(logits_index, dtype=np.int64)]
        if p_seqs:
            arrays += [cu_a, p_lens_a, p_bt]
        if d_lens:
            arrays += [d_lens_a, d_bt]
        dev = self._upload(arrays)
        input_ids, pos_t, slot_t, logits_t = dev[:4]
        attn = AttentionMetadata(backend=self.backend, slot_mapping=slot_t, num_prefill_tokens=P)
        if not self.check_layers:
            attn.write_kwargs = {"check": False, "padding": False}
        rest = dev[4:]
        if p_seqs:
            attn.prefill_cu_seqlens_q, attn.prefill_seq_lens, attn.prefill_block_tables = rest[:3]
            rest = rest[3:]
            if not self.check_layers:
                attn.prefill_kwargs = {"check": False, "max_q_len": int(np.diff(cu_a).max()),
                                       "cu_seqlens_host": cu, "seq_lens_host": p_lens}
        if d_lens:
            attn.decode_seq_lens, attn.decode_block_tables = rest[:2]
            if not self.check_layers:
                attn.decode_kwargs = {"check": False, "max_seq_len": max(d_lens)}
        return input_ids, pos_t, attn, logits_t

    # ---- the step -----------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, batch: Batch) -> StepResult:
        """Run one iteration; seconds include input preparation, the forward pass and sampling
        (everything a real engine spends per step)."""
        if not batch:
            return StepResult(0.0, [])
        # a collection inside the timed region would add milliseconds to whichever step it hit
        with gc_paused():
            return self._run(batch)

    def _run(self, batch: Batch) -> StepResult:
        cuda = self.device.type == "cuda"
        if cuda:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            t0.record()
        else:
            start = time.perf_counter()
        next_ids = None
        # a per-layer callback (disaggregated KV streaming) cannot run inside a replayed graph
        if self.graphs is not None and batch.decodes and not batch.prefills and self.layer_done is None:
            next_ids = self.graphs.run(batch.decodes)      # None: no bucket fits, run eagerly
        if next_ids is None:
            input_ids, positions, attn, logits_index = self.prepare(batch)
            logits = self.model(input_ids, positions, self.kv_caches, attn, logits_index,
                                layer_done=self.layer_done)                                # [S, V]
            next_ids = logits.argmax(dim=-1)                                               # [S] greedy
        if cuda:
            t1.record()
        tokens = next_ids.tolist()                   # waits for the GPU
        seconds = t0.elapsed_time(t1) / 1e3 if cuda else time.perf_counter() - start
        self.steps += 1
        return StepResult(seconds, tokens)

    # ---- disaggregation -----------------------------------------------------------------------
    @torch.inference_mode()
    def transfer_kv(self, src: "ModelExecutor", src_block_table: list[int], dst_block_table: list[int]) -> None:
        """Copy a sequence's KV blocks from ``src``'s cache into this one (disaggregated mode on
        one machine: prefill and decode executors are separate caches, maybe separate devices).
        Copies ``len(dst_block_table)`` blocks, in order."""
        n = len(dst_block_table)
        if len(src_block_table) < n:
            raise ValueError(f"transfer_kv: {len(src_block_table)} source blocks for {n} destination blocks")
        if n == 0:
            return
        if (src.cfg.num_layers, src.cfg.num_kv_heads, src.cfg.head_dim, src.block_size) != \
                (self.cfg.num_layers, self.cfg.num_kv_heads, self.cfg.head_dim, self.block_size):
            raise ValueError("transfer_kv: source and destination caches have different shapes")
        s_idx = torch.tensor(src_block_table[:n], dtype=torch.int64, device=src.device)
        d_idx = torch.tensor(dst_block_table, dtype=torch.int64, device=self.device)
        for (sk, sv), (dk, dv) in zip(src.kv_caches, self.kv_caches):
            dk[d_idx] = sk[s_idx].to(self.device, dk.dtype, non_blocking=True)
            dv[d_idx] = sv[s_idx].to(self.device, dv.dtype, non_blocking=True)


def _decode_graphs(ex: ModelExecutor, graphs):
    """The executor's DecodeGraphs for its ``graphs`` option, or None."""
    from .graphs import DecodeGraphs

    if graphs not in ("auto", True, False, "eager"):
        raise PdlabError(f"graphs: {graphs!r} is not one of 'auto', True, False, 'eager'")
    if graphs == "eager":
        return DecodeGraphs(ex, capture=False)
    usable = ex.device.type == "cuda" and ex.backend_name == "numba"
    if graphs is True and not usable:
        raise PdlabError(f"graphs: CUDA-graph decode needs the numba backend on a CUDA device "
                         f"(got backend {ex.backend_name!r} on {ex.device.type})")
    return DecodeGraphs(ex) if graphs is not False and usable else None


def factory(model: Model, backend: str = "torch", device=None, graphs="auto"):
    """An ``executor_factory`` for ``pdlab.run.run_serving``: one ModelExecutor (and one KV
    cache) per worker, sharing the model weights."""

    def make(worker_name: str, role: str, num_blocks: int, block_size: int) -> ModelExecutor:
        return ModelExecutor(model, num_blocks, block_size, backend=backend, device=device, graphs=graphs)

    return make
