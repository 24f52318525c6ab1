"""``pdlab generate``: stream a story from the tiny trained model through the real paged engine.

    pdlab generate "Once upon a time" --max-new-tokens 40
    python -m pdlab.generate "Once upon a time" --max-new-tokens 40

The prompt is one prefill step; every further token is one decode step over the paged KV cache
(the same ModelExecutor the serving benchmarks use), so the timing line at the end is the two
phases of LLM inference in miniature.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import tokenizer
from .request import Batch, Request, Sequence


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
             stop_id: int | None = tokenizer.EOS, block_manager=None) -> tuple[list[int], list[float]]:
    """Greedy generation of one request through ``executor`` (a ModelExecutor): a prefill step,
    then decode steps. Blocks come from a BlockManager (``block_manager``, or a fresh one over
    the executor's cache) as the scheduler would allocate them; they stay allocated afterwards.
    Returns (output ids, measured seconds of each step)."""
    from .kv import BlockManager

    bm = block_manager or BlockManager(executor.num_blocks, executor.block_size)
    seq = Sequence(Request(0, 0.0, len(prompt_ids), max_new_tokens, tuple(prompt_ids)))
    step_seconds = []
    while seq.num_output < max_new_tokens:
        n = seq.num_tokens - seq.num_computed
        if not bm.can_allocate(seq, n):
            raise ValueError(f"KV cache of {executor.num_blocks} blocks is too small for "
                             f"{seq.num_tokens} tokens")
        bm.allocate(seq, n)
        batch = Batch()
        if seq.num_computed == 0:
            batch.add_prefill(seq, n)
        else:
            batch.add_decode(seq)
        result = executor.run(batch)
        step_seconds.append(result.seconds)
        tok = result.tokens[0]
        seq.num_computed += n
        seq.num_tokens += 1
        seq.output_ids.append(tok)
        if on_token is not None:
            on_token(tok)
        if tok == stop_id:
            break
    return seq.output_ids, step_seconds


def run(args) -> int:
    from . import model as M
    from .model_executor import ModelExecutor

    if args.max_new_tokens < 1:
        raise M._error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.block_size < 1:
        raise M._error(f"--block-size must be >= 1, got {args.block_size}")
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


def main(argv=None) -> int:
    """``python -m pdlab.generate ...`` is ``pdlab generate ...``: one parser, one error path."""
    from .cli import main as cli_main
    return cli_main(["generate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
