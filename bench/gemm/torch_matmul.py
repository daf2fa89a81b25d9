#!/usr/bin/env python3
"""PyTorch's f32 matmul at bench/gemm's shapes, all cores, best of three loops (GFLOP/s); then
MiniLM's six layers in turn as bench/gemm runs them (36 distinct weight matrices, each product
with its bias: `F.linear`, PyTorch's own linear layer)."""
import os
import time

import torch

SHAPES = [(2048, 1536, 384), (2048, 384, 1536), (2048, 384, 384), (128, 384, 384), (128, 1536, 384),
          (4096, 1024, 1024), (4096, 4096, 1024)]
# (k, n) of a MiniLM layer's products: q, k, v, output projection, feed-forward up and down.
LAYER = [(384, 384)] * 4 + [(384, 1536), (1536, 384)]
SEQUENCE_ROWS = [1744, 56]


def best_of_three(reps, run):
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            run()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def layer_sequence():
    weights = [(torch.rand(n, k), torch.rand(n)) for _ in range(6) for k, n in LAYER]
    print("\n| six MiniLM layers (36 weight matrices), rows | PyTorch F.linear GFLOP/s |")
    print("|---|---|")
    for m in SEQUENCE_ROWS:
        x = {k: torch.rand(m, k) for k in (384, 1536)}
        flops = sum(2 * m * w.shape[0] * w.shape[1] for w, _ in weights)
        reps = max(1, min(200, int(2e10 / flops)))

        def run():
            for w, b in weights:
                torch.nn.functional.linear(x[w.shape[1]], w, b)

        with torch.inference_mode():
            print(f"| {m} | {flops / best_of_three(reps, run) / 1e9:.1f} |")


torch.set_num_threads(os.cpu_count())
print("| m × k · k × n | PyTorch GFLOP/s |")
print("|---|---|")
for m, n, k in SHAPES:
    a, b = torch.rand(m, k), torch.rand(k, n)
    flops = 2 * m * n * k
    reps = max(3, min(200, int(2e10 / flops)))
    print(f"| {m} × {k} · {k} × {n} | {flops / best_of_three(reps, lambda: a @ b) / 1e9:.1f} |")
layer_sequence()
