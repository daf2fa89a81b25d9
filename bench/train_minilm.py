#!/usr/bin/env python3
"""harmaug distill vs a PyTorch training loop on the same CPU, side by side (issue: distill).

Both train all-MiniLM-L6-v2 (+ a fresh 2-way classifier) on the same rows with the same
recipe: dropout on (train mode), micro-batches of --micro-batch-size rows at exactly
--max-length tokens (rows are long jailbreak responses, so every one is truncated to the full
length and no padding differs), gradients accumulated to --batch-size, global-norm clip 1.0,
AdamW with weight decay on matrices only, linear warm-up/decay, CE + 0.5·KL on teacher scores.
Prints training examples/s (median over the updates after the first) and the ratio.

    pip install torch transformers
    cargo build --release -p harmaug [--features blas]
    python3 bench/train_minilm.py [--backends cpu,ndarray] [--steps 6]
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "train" / "pairs_jailbreakbench_artifacts.jsonl"
MINILM = pathlib.Path(os.environ.get("HARMAUG_MINILM", pathlib.Path.home() / ".cache/harmaug/assets/all-MiniLM-L6-v2"))


def long_rows(tokenizer, max_length, n):
    """Rows whose prompt + response is longer than max_length tokens, with a teacher score."""
    rows = []
    with open(DATA) as f:
        for line in f:
            row = json.loads(line)
            if not row.get("response"):
                continue
            if len(tokenizer(row["prompt"], row["response"])["input_ids"]) > max_length:
                score = 0.8 if row["label"] else 0.2
                rows.append({"prompt": row["prompt"], "response": row["response"], "label": row["label"],
                             "teacher_score": score})
            if len(rows) == n:
                break
    return rows


def torch_train(rows, args):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=3e-5, betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
    rates = []
    for step in range(args.steps):
        start = time.perf_counter()
        batch_rows = [rows[(step * args.batch_size + i) % len(rows)] for i in range(args.batch_size)]
        for m in range(0, args.batch_size, args.micro_batch_size):
            micro = batch_rows[m:m + args.micro_batch_size]
            enc = tokenizer([r["prompt"] for r in micro], [r["response"] for r in micro], truncation=True,
                            max_length=args.max_length, padding=True, return_tensors="pt")
            logits = model(**enc).logits
            log_p = torch.log_softmax(logits, -1)
            hard = torch.tensor([r["label"] for r in micro])
            t = torch.tensor([r["teacher_score"] for r in micro])
            teacher = torch.stack([1 - t, t], -1)
            ce = torch.nn.functional.nll_loss(log_p, hard, reduction="none")
            kl = (teacher * (teacher.log() - log_p)).sum(-1)
            loss = (0.5 * kl + 0.5 * ce).sum() / args.batch_size
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        rates.append(args.batch_size / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def harmaug_train(binary, data, out, backend, args, extra=()):
    subprocess.run([binary, "distill", *extra, "--model", str(MINILM), "--train", str(data), "--out", str(out),
                    "--backend", backend, "--batch-size", str(args.batch_size),
                    "--micro-batch-size", str(args.micro_batch_size), "--max-length", str(args.max_length),
                    "--max-steps", str(args.steps), "--val-fraction", "0", "--save-every", "1000000",
                    "--warmup-steps", "100"],
                   check=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})
    rates = [json.loads(line)["examples_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "examples_per_s" in line]
    return statistics.median(rates[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--binary", default=str(ROOT / "target/release/harmaug"))
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    rows = long_rows(tokenizer, args.max_length, args.batch_size * args.steps)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); {len(rows)} rows of "
          f"{args.max_length} tokens; updates of {args.batch_size} rows in micro-batches of {args.micro_batch_size}")
    print("| engine | training examples/s | × PyTorch |")
    print("|---|---|---|")
    reference = torch_train(rows, args)
    print(f"| PyTorch {torch.__version__} | {reference:.2f} | 1.00 |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = tmp / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for backend in args.backends.split(","):
            # On the CPU, distill trains one model copy per core by default; `--devices 0` is one copy.
            variants = [("", ())] + ([(" --devices 0", ("--devices", "0"))] if backend in ("cpu", "flex") else [])
            for label, extra in variants:
                out = tmp / f"out-{backend}{label.replace(' ', '_')}"
                rate = harmaug_train(args.binary, data, out, backend, args, extra)
                print(f"| harmaug {backend}{label} | {rate:.2f} | {rate / reference:.2f} |", flush=True)


if __name__ == "__main__":
    main()
