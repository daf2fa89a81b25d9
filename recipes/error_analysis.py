#!/usr/bin/env python3
"""The worst mistakes of a guard, per benchmark, from `harmaug eval --scores` output: the N
highest-scored safe rows (false positives) and the N lowest-scored unsafe rows (false
negatives), each shortened to one line, plus the error counts at the given threshold. For the
model card's error analysis, which summarises them by kind (the rows are benchmark text: read
them, do not paste them).

    recipes/error_analysis.py SCORES.jsonl --threshold 0.8 [--worst 20]
"""

import argparse
import collections
import json


def shorten(row, width=160):
    prompt = row.get("prompt", row.get("user_input", ""))  # ToxicChat keeps its `user_input`
    text = prompt if not row.get("response") else f'{prompt} ⇒ {row["response"]}'
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--worst", type=int, default=20)
    args = parser.parse_args()
    by_set = collections.defaultdict(list)
    for line in open(args.scores, encoding="utf-8"):
        row = json.loads(line)
        by_set[row["dataset"]].append(row)
    for dataset, rows in by_set.items():
        negatives = sorted((r for r in rows if not r["label"]), key=lambda r: -r["score"])
        positives = sorted((r for r in rows if r["label"]), key=lambda r: r["score"])
        fp = sum(r["score"] >= args.threshold for r in negatives)
        fn = sum(r["score"] < args.threshold for r in positives)
        print(f"\n## {dataset}: {len(rows)} rows, {fp} false positives, {fn} false negatives "
              f"at {args.threshold}")
        print(f"\n### {args.worst} worst false positives (safe, highest score)")
        for r in negatives[: args.worst]:
            print(f"- {r['score']:.3f} {shorten(r)}")
        print(f"\n### {args.worst} worst false negatives (unsafe, lowest score)")
        for r in positives[: args.worst]:
            print(f"- {r['score']:.3f} {shorten(r)}")


if __name__ == "__main__":
    main()
