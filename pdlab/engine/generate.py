"""``pdlab generate``: stream a story from the tiny trained model through the real paged engine.

    pdlab generate "Once upon a time" --max-new-tokens 40
    python -m pdlab generate "Once upon a time" --max-new-tokens 40

The prompt is one prefill step; every further token is one decode step over the paged KV cache
(the same ModelExecutor the serving benchmarks use), so the timing line at the end is the two
phases of LLM inference in miniature.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import PdlabError
from ..request import Request, Sequence
from . import tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default="Once upon a time", help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens (bytes) to generate")
    parser.add_argument("--weights", default=None,
                        help="directory with config.json + model.safetensors (default: data/tiny)")
    parser.add_argument("--backend", choices=("torch", "numba"), default="torch",
                        help="attention backend: torch (any machine) or numba (GPU or CUDA simulator)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: a 6M-parameter model gains nothing "
                             "from more, and on a busy CPU extra threads make it 10-30x slower)")
    parser.add_argument("--quiet", action="store_true", help="no timing line at the end")


def generate(executor, prompt_ids: list[int], max_new_tokens: int, on_token=None,
             stop_id: int | None = tokenizer.EOS, block_manager=None,
             blocks_held: list | None = None) -> tuple[list[int], list[float]]:
    """Greedy generation of one request through ``executor`` (a ModelExecutor) on the serving
    scheduler: a prefill step, then decode steps, each ``schedule -> run -> postprocess`` exactly as
    in serving (so the stop token and ``max_new_tokens`` end it the same way). Blocks come from
    ``block_manager`` (or a fresh one over the executor's cache) and go back to it when the request
    finishes; ``blocks_held`` (a list) receives the blocks the request held in each step. Returns
    (output ids, measured seconds of each step)."""
    from ..serving import BlockManager, ChunkedScheduler

    bm = block_manager or BlockManager(executor.num_blocks, executor.block_size)
    sched = ChunkedScheduler(bm, max_num_seqs=1, token_budget=float("inf"))
    req = Request(0, 0.0, len(prompt_ids), max_new_tokens, tuple(prompt_ids),
                  stop_ids=() if stop_id is None else (stop_id,))
    seq = Sequence(req)
    if not sched.add(seq):
        raise PdlabError(f"KV cache of {executor.num_blocks} blocks is too small: {seq.reject_reason}")
    step_seconds: list[float] = []
    now = 0.0
    while sched.has_work():
        batch = sched.schedule(now)
        if not batch:
            raise PdlabError(f"KV cache of {executor.num_blocks} blocks is too small for {seq.num_tokens} tokens")
        result = executor.run(batch)
        if blocks_held is not None:
            blocks_held.append(len(seq.block_table))
        now += result.seconds
        step_seconds.append(result.seconds)
        sched.postprocess(batch, result, now)
        if on_token is not None:
            on_token(seq.output_ids[-1])
    return seq.output_ids, step_seconds


def run(args) -> int:
    if args.max_new_tokens < 1:      # checked before torch loads: a typo answers at once
        raise PdlabError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.block_size < 1:
        raise PdlabError(f"--block-size must be >= 1, got {args.block_size}")
    if args.threads < 0:
        raise PdlabError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.device not in (None, "cpu", "cuda") and not args.device.startswith("cuda:"):
        raise PdlabError(f"--device must be cpu or cuda, got '{args.device}'")
    for name in ("config.json", "model.safetensors"):
        if args.weights is not None and not (Path(args.weights) / name).is_file():
            raise PdlabError(f"--weights {args.weights}: no {name} there (a model directory holds "
                             f"config.json + model.safetensors)")
    from . import model as M
    from .executor import ModelExecutor
    if args.threads >= 1:
        import torch
        torch.set_num_threads(args.threads)
    model = M.load(args.weights or M.TINY_DIR, device="cpu")
    prompt_ids = tokenizer.encode(args.prompt)
    total = len(prompt_ids) + args.max_new_tokens
    num_blocks = -(-total // args.block_size) + 1
    ex = ModelExecutor(model, num_blocks, args.block_size, backend=args.backend, device=args.device)

    out = sys.stdout
    dec = tokenizer.StreamDecoder()
    out.write(args.prompt)
    out.flush()

    def show(tok: int) -> None:
        out.write(dec.push(tok))
        out.flush()

    t0 = time.perf_counter()
    ids, secs = generate(ex, prompt_ids, args.max_new_tokens, on_token=show)
    wall = time.perf_counter() - t0
    out.write(dec.flush() + "\n")
    out.flush()   # the timing line goes to stderr: let the story end first
    if not args.quiet:
        decode = secs[1:]
        per_tok = f"{1e3 * sum(decode) / len(decode):.1f} ms/token" if decode else "n/a"
        print(f"[{len(ids)} tokens in {wall:.2f} s on {ex.device.type} ({args.backend} backend), measured: "
              f"prefill of {len(prompt_ids)} tokens {1e3 * secs[0]:.1f} ms, decode {per_tok}]",
              file=sys.stderr)
    return 0
