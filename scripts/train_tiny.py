"""Train pdlab's tiny model on the procedural story corpus and write ``data/tiny``.

    python scripts/make_corpus.py --stories 60000 --out /tmp/corpus.txt
    python scripts/train_tiny.py --corpus /tmp/corpus.txt --out data/tiny --max-seconds 200

Byte-level tokens, packed windows of ``--seq-len`` + 1, AdamW with warmup and a cosine decay
driven by whichever ends first: ``--steps`` or ``--max-seconds`` (so one GPU call has a fixed
cost). bf16 autocast on a GPU, fp32 on the CPU. Writes model.safetensors (fp16), config.json and
train_log.json (final train/held-out loss, steps, seconds, device, command).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pdlab.engine import model as M  # noqa: E402
from pdlab.engine import tokenizer  # noqa: E402


def pack(text: str) -> torch.Tensor:
    ids: list[int] = []
    for story in text.split("\n\n"):
        story = story.strip()
        if story:
            ids += tokenizer.encode(story) + [tokenizer.EOS]
    return torch.tensor(ids, dtype=torch.int16)


def batches(data: torch.Tensor, batch: int, seq_len: int, g: torch.Generator):
    while True:
        start = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=g)
        w = torch.stack([data[s:s + seq_len + 1] for s in start.tolist()]).long()  # [B, S+1]
        yield w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model, data, batch, seq_len, device, n=20) -> float:
    g = torch.Generator().manual_seed(1234)
    it = batches(data, batch, seq_len, g)
    tot = 0.0
    for _ in range(n):
        x, y = (t.to(device) for t in next(it))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model.forward_dense(x)
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1)).item()
    return tot / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", default=str(M.TINY_DIR))
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--max-seconds", type=float, default=200.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    text = Path(args.corpus).read_text(encoding="utf-8")
    data = pack(text)
    split = int(len(data) * 0.98)
    train, held = data[:split], data[split:]
    cfg = M.preset("tiny")
    with torch.device(device):
        model = M.Model(cfg)
    model.init_random(args.seed).train()
    print(f"device {device}, {cfg.num_params() / 1e6:.2f}M params, {len(train) / 1e6:.1f}M train tokens", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    it = batches(train, args.batch, args.seq_len, torch.Generator().manual_seed(args.seed))
    t0, step, loss_ema = time.perf_counter(), 0, None
    while True:
        elapsed = time.perf_counter() - t0
        progress = max(step / args.steps, elapsed / args.max_seconds)
        if progress >= 1.0:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, y = (t.to(device, non_blocking=True) for t in next(it))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model.forward_dense(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            l = loss.item()
            loss_ema = l if loss_ema is None else 0.9 * loss_ema + 0.1 * l
            print(f"step {step:5d}  loss {l:.4f}  lr {lr:.2e}  {time.perf_counter() - t0:6.1f}s", flush=True)
    seconds = time.perf_counter() - t0
    model.eval()
    held_loss = evaluate(model, held, 16, args.seq_len, device)
    out = M.save(model, args.out)
    # check the saved (fp16) weights, not the training copy
    reloaded = M.load(args.out, device=device)
    held_loss_fp16 = evaluate(reloaded, held, 16, args.seq_len, device)
    sample_ids = reloaded.generate_dense(tokenizer.encode("Once upon a time"), 120, stop_id=tokenizer.EOS)
    sample = tokenizer.decode(sample_ids)
    log = {"steps": step, "seconds": round(seconds, 1), "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
           "tokens_seen": step * args.batch * args.seq_len, "final_train_loss_ema": round(loss_ema or float("nan"), 4),
           "heldout_loss": round(held_loss, 4), "heldout_loss_fp16_weights": round(held_loss_fp16, 4),
           "loss_unit": "nats per byte", "params": cfg.num_params(), "args": vars(args),
           "torch": torch.__version__, "sample": "Once upon a time" + sample}
    Path(args.out, "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log, indent=2))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
