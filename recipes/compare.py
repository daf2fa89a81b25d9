#!/usr/bin/env python3
"""How sure a difference between two models is: a paired bootstrap of the AUPRC difference on
one data set, from the per-row scores `harmaug eval --scores` wrote for each (same rows, same
order). One student per variant is one draw of the training noise; the interval says whether a
gap is larger than the rows alone can make it.

    recipes/compare.py --base scores-A.jsonl --other scores-B.jsonl [--dataset validation-chat]
        [--resamples 2000] [--seed 7]
    prints: dataset, AUPRC of each, the difference (other − base) and its 95% interval
"""

import argparse
import json
import sys

import numpy as np
from sklearn.metrics import average_precision_score


def read_scores(path, dataset):
    """(labels, scores) of the rows of `dataset` in a `harmaug eval --scores` file."""
    labels, scores = [], []
    for number, line in enumerate(open(path, encoding="utf-8"), start=1):
        row = json.loads(line)
        if row.get("dataset") != dataset:
            continue
        if row.get("label") is None or row.get("score") is None:
            sys.exit(f"{path}:{number}: a row needs `label` and `score`")
        labels.append(int(row["label"]))
        scores.append(float(row["score"]))
    if not labels:
        sys.exit(f"{path}: no rows of data set {dataset!r}")
    return np.array(labels), np.array(scores)


def paired_bootstrap(labels, base, other, resamples, seed):
    """AUPRC(other) − AUPRC(base) on `resamples` resamplings of the rows, both models on the same
    resampled rows each time."""
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(resamples):
        rows = rng.integers(0, len(labels), len(labels))
        if labels[rows].min() == labels[rows].max():
            continue  # one class only: AUPRC undefined
        gaps.append(average_precision_score(labels[rows], other[rows])
                    - average_precision_score(labels[rows], base[rows]))
    return np.array(gaps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--other", required=True)
    parser.add_argument("--dataset", default="validation-chat")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    labels, base = read_scores(args.base, args.dataset)
    other_labels, other = read_scores(args.other, args.dataset)
    if not np.array_equal(labels, other_labels):
        sys.exit(f"{args.base} and {args.other} do not hold the same {args.dataset} rows in order")
    gaps = paired_bootstrap(labels, base, other, args.resamples, args.seed)
    low, high = np.percentile(gaps, [2.5, 97.5])
    base_auprc = average_precision_score(labels, base)
    other_auprc = average_precision_score(labels, other)
    print(f"{args.dataset}: AUPRC {base_auprc:.3f} → {other_auprc:.3f}, "
          f"difference {other_auprc - base_auprc:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}] "
          f"({len(gaps)} resamples of {len(labels)} rows)")


if __name__ == "__main__":
    main()
