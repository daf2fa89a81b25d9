#!/usr/bin/env python3
"""PyTorch's f32 matmul at bench/gemm's shapes, all cores, best of three loops (GFLOP/s)."""
import os
import time

import torch

SHAPES = [(2048, 1536, 384), (2048, 384, 1536), (2048, 384, 384), (128, 384, 384), (128, 1536, 384),
          (4096, 1024, 1024), (4096, 4096, 1024)]

torch.set_num_threads(os.cpu_count())
print("| m × k · k × n | PyTorch GFLOP/s |")
print("|---|---|")
for m, n, k in SHAPES:
    a, b = torch.rand(m, k), torch.rand(k, n)
    flops = 2 * m * n * k
    reps = max(3, min(200, int(2e10 / flops)))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - start) / reps)
    print(f"| {m} × {k} · {k} × {n} | {flops / best / 1e9:.1f} |")
