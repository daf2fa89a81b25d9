#!/usr/bin/env python3
"""harmaug score vs PyTorch/transformers on the same CPU, side by side (issue: foundation).

Scores the same 1,000 prompts (the first 1,000 of ToxicChat's training prompts in
../shared/data) with all-MiniLM-L6-v2 plus a fixed random classifier head, at batch 1 and 32,
through `harmaug score` (each CPU backend given) and through transformers, and prints
throughput and the ratio. Both sides sort inputs by length before batching, use every core,
and are timed from tokenisation to scores (model loading excluded; harmaug's process wall time
is printed too). Also prints the largest |Δscore| between the two, a real-weights check.
With --int8, a second table: PyTorch's dynamic int8 (`quantize_dynamic` on every Linear) against
harmaug on the same model exported as an int8 bundle, run with `--precision int8` (dynamic int8
kernels) and `--precision f32` (the bundle dequantised), |Δscore| against PyTorch f32.

On a noisy machine, `--rounds R` repeats every measurement R times (engines alternating within
each round) and ends with the median of each engine's per-round ratio; `--binary` may be given
several times (a build before and after a change, say: `--binary OLD --binary NEW`).

    pip install torch transformers
    cargo build --release -p harmaug --features ndarray,candle
    python3 bench/score_minilm.py [--backends flex,ndarray,candle] [--n 1000] [--int8]
                                  [--rounds R] [--binary B ...]
"""
import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "train" / "prompts_toxicchat0124_train.jsonl"
MINILM = pathlib.Path(os.environ.get("HARMAUG_MINILM", pathlib.Path.home() / ".cache/harmaug/assets/all-MiniLM-L6-v2"))


def make_model(out: pathlib.Path):
    """MiniLM + a classifier head drawn once with a fixed seed, saved as one HF directory."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(out)


def torch_scores(model_dir, prompts, batch_size, int8=False):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    start = time.perf_counter()
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=512)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    scores = [0.0] * len(prompts)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            batch = tokenizer([prompts[j] for j in chunk], truncation=True, max_length=512,
                              padding=True, return_tensors="pt")
            probs = model(**batch).logits.softmax(-1)[:, 1].tolist()
            for j, p in zip(chunk, probs):
                scores[j] = p
    return time.perf_counter() - start, scores


def harmaug_scores(binary, model_dir, input_path, batch_size, backend, precision="f32"):
    start = time.perf_counter()
    out = subprocess.run([binary, "score", "--model", str(model_dir), "--input", str(input_path),
                          "--batch-size", str(batch_size), "--backend", backend,
                          "--precision", precision],
                         capture_output=True, text=True, check=True, env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - start
    seconds = float(re.search(r"seconds=([0-9.e-]+)", out.stderr).group(1))
    return seconds, wall, [json.loads(line)["score"] for line in out.stdout.splitlines()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="flex,ndarray,candle")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--binary", action="append",
                        help="harmaug binary (repeat to compare builds; default target/release/harmaug)")
    parser.add_argument("--int8", action="store_true", help="also compare the int8 paths")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, then print medians")
    args = parser.parse_args()
    binaries = args.binary or [str(ROOT / "target/release/harmaug")]

    with open(DATA) as f:
        prompts = [json.loads(line)["prompt"] for _, line in zip(range(args.n), f)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); {len(prompts)} prompts from {DATA.name}")
    ratios = {}  # (table, batch, engine) -> per-round ratios
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = tmp / "minilm-head"
        make_model(model_dir)
        input_path = tmp / "prompts.jsonl"
        input_path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        bundle = export_int8(binaries[0], model_dir, tmp) if args.int8 else None
        for round_ in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"\nround {round_} of {args.rounds}")
            f32_table(args, binaries, model_dir, input_path, prompts, ratios)
            if bundle:
                int8_table(binaries, model_dir, bundle, input_path, prompts, ratios)
    if args.rounds > 1:
        print("\n| table | batch | engine | median × PyTorch | per round |")
        print("|---|---|---|---|---|")
        for (table, batch, engine), values in ratios.items():
            rounds = " / ".join(f"{v:.2f}" for v in values)
            print(f"| {table} | {batch} | {engine} | {statistics.median(values):.2f} | {rounds} |")


def engine_name(binaries, binary, what):
    return what if len(binaries) == 1 else f"{what} ({pathlib.Path(binary).name})"


def f32_table(args, binaries, model_dir, input_path, prompts, ratios):
    print("| batch | engine | seconds | prompts/s | × PyTorch | max abs Δscore vs PyTorch | process wall s |")
    print("|---|---|---|---|---|---|---|")
    for batch_size in [1, 32]:
        t_torch, s_torch = torch_scores(model_dir, prompts, batch_size)
        print(f"| {batch_size} | PyTorch {torch.__version__} | {t_torch:.2f} | {len(prompts) / t_torch:.1f} | 1.00 | 0 | |", flush=True)
        for binary in binaries:
            for backend in args.backends.split(","):
                t, wall, s = harmaug_scores(binary, model_dir, input_path, batch_size, backend)
                diff = max(abs(a - b) for a, b in zip(s, s_torch))
                name = engine_name(binaries, binary, f"harmaug {backend}")
                ratios.setdefault(("f32 vs PyTorch f32", batch_size, name), []).append(t_torch / t)
                print(f"| {batch_size} | {name} | {t:.2f} | {len(prompts) / t:.1f} | {t_torch / t:.2f} | {diff:.1e} | {wall:.2f} |", flush=True)


def export_int8(binary, model_dir, tmp):
    bundle = tmp / "minilm-head-int8"
    subprocess.run([binary, "export", "--model", str(model_dir), "--out", str(bundle), "--dtype", "int8"],
                   capture_output=True, check=True)
    return bundle


def int8_table(binaries, model_dir, bundle, input_path, prompts, ratios):
    print("\n| batch | engine | seconds | prompts/s | × PyTorch f32 | × PyTorch int8 | max abs Δscore vs PyTorch f32 |")
    print("|---|---|---|---|---|---|---|")
    for batch_size in [1, 32]:
        t_f32, s_f32 = torch_scores(model_dir, prompts, batch_size)
        t_q, s_q = torch_scores(model_dir, prompts, batch_size, int8=True)
        diff = max(abs(a - b) for a, b in zip(s_q, s_f32))
        print(f"| {batch_size} | PyTorch f32 | {t_f32:.2f} | {len(prompts) / t_f32:.1f} | 1.00 | {t_q / t_f32:.2f} | 0 |")
        print(f"| {batch_size} | PyTorch dynamic int8 | {t_q:.2f} | {len(prompts) / t_q:.1f} | {t_f32 / t_q:.2f} | 1.00 | {diff:.1e} |", flush=True)
        for binary in binaries:
            for precision in ["int8", "f32"]:
                t, _, s = harmaug_scores(binary, bundle, input_path, batch_size, "flex", precision)
                diff = max(abs(a - b) for a, b in zip(s, s_f32))
                name = engine_name(binaries, binary, f"harmaug int8 bundle, --precision {precision}")
                ratios.setdefault(("int8 bundle vs PyTorch dynamic int8", batch_size, name), []).append(t_q / t)
                print(f"| {batch_size} | {name} | {t:.2f} | {len(prompts) / t:.1f} | "
                      f"{t_f32 / t:.2f} | {t_q / t:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
