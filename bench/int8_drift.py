#!/usr/bin/env python3
"""How far `--precision int8` (the int8 kernels) moves an int8 bundle's scores from `--precision
f32` (the same bundle dequantised): per data set, max and mean |Δscore| and the verdicts that
flip at the bundle's threshold, from two `harmaug eval --scores` files of the same data.

    harmaug eval --model B --precision f32  --scores f32.jsonl  --data A --data ...
    harmaug eval --model B --precision int8 --scores int8.jsonl --data A --data ...
    python3 bench/int8_drift.py f32.jsonl int8.jsonl --threshold 0.558
"""
import argparse
import json
from collections import defaultdict


def scores_by_set(path):
    sets = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            sets[row["dataset"]].append(row["score"])
    return sets


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("f32")
    parser.add_argument("int8")
    parser.add_argument("--threshold", type=float, required=True)
    args = parser.parse_args()
    f32, int8 = scores_by_set(args.f32), scores_by_set(args.int8)
    print("| data set | rows | max \\|Δscore\\| | mean \\|Δscore\\| | verdicts flipped |")
    print("|---|---|---|---|---|")
    for name, base in f32.items():
        other = int8[name]
        if len(other) != len(base):
            raise SystemExit(f"{name}: {len(base)} rows in {args.f32}, {len(other)} in {args.int8}")
        diffs = [abs(a - b) for a, b in zip(base, other)]
        flips = sum((a >= args.threshold) != (b >= args.threshold) for a, b in zip(base, other))
        print(f"| {name} | {len(base)} | {max(diffs):.4f} | {sum(diffs) / len(diffs):.5f} | "
              f"{flips} ({100 * flips / len(base):.2f}%) |")


if __name__ == "__main__":
    main()
