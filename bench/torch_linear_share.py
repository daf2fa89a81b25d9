#!/usr/bin/env python3
"""How fast PyTorch's linear layers run inside its own scoring loop (bench/score_minilm.py's
loop: the same 1,000 ToxicChat prompts, sorted by length, batches padded to their longest):
every `nn.Linear.forward` is timed and its FLOPs counted, so the GEMM speed it reaches in the
process (weights from L3, activations fresh) can be set beside harmaug's and beside the
stand-alone numbers of bench/gemm.

    python3 bench/torch_linear_share.py [--batch-size 32] [--rounds 2]
"""
import argparse
import json
import pathlib
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from score_minilm import DATA, make_model


def timed_linear(stats):
    forward = torch.nn.Linear.forward

    def timed(self, x):
        start = time.perf_counter()
        y = forward(self, x)
        stats["seconds"] += time.perf_counter() - start
        stats["flops"] += 2 * (x.numel() // x.shape[-1]) * self.in_features * self.out_features
        return y

    torch.nn.Linear.forward = timed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    prompts = [json.loads(line)["prompt"] for line in DATA.open()][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        make_model(pathlib.Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        model = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=512)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    stats = {"seconds": 0.0, "flops": 0}
    timed_linear(stats)
    for _ in range(args.rounds):
        stats.update(seconds=0.0, flops=0)
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(order), args.batch_size):
                chunk = order[i:i + args.batch_size]
                batch = tokenizer([prompts[j] for j in chunk], truncation=True, max_length=512,
                                  padding=True, return_tensors="pt")
                model(**batch).logits.softmax(-1)
        total = time.perf_counter() - start
        print(f"batch {args.batch_size}: {total:.2f} s in all, linear layers {stats['seconds']:.2f} s "
              f"({stats['seconds'] / total:.0%}), {stats['flops'] / 1e12:.3f} TFLOP, "
              f"{stats['flops'] / stats['seconds'] / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
