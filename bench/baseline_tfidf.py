#!/usr/bin/env python3
"""The bag-of-words baseline a shipped guard must beat: TF-IDF (word 1–2-grams) + logistic
regression with balanced class weights (scikit-learn), trained on the same ../shared/data/train
files as the guard (minus the recipe's 5% validation rows), scored on the benchmarks.

    python3 bench/baseline_tfidf.py                  # both rows: the 7 chat files, all 19 files
    python3 bench/baseline_tfidf.py --files chat --weak-negatives drop --json out.json

F1 is reported twice: at the threshold with the best F1 on the validation rows (as harmaug's
bundles choose theirs), and the best F1 on the benchmark itself (an oracle threshold: an upper
bound, the number the issue's first table quotes). AUPRC = sklearn's average_precision_score,
which `harmaug eval` matches. Needs scikit-learn (pip install scikit-learn).
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "recipes"))
import guard_data  # noqa: E402


def best_f1(labels, scores):
    """(best F1, its threshold) over all thresholds, as harmaug's best_f1_threshold."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-12), 0)
    i = int(np.argmax(f1[:-1]))
    return float(f1[i]), float(thresholds[i])


def f1_at(labels, scores, threshold):
    predicted = np.asarray(scores) >= threshold
    labels = np.asarray(labels).astype(bool)
    tp = int(np.sum(predicted & labels))
    denominator = int(np.sum(predicted)) + int(np.sum(labels))
    return 2 * tp / denominator if denominator else 0.0


def fit(rows):
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                 max_features=500_000)
    features = vectorizer.fit_transform([r.text for r in rows])
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
    model.fit(features, [r.label for r in rows])
    return lambda texts: model.predict_proba(vectorizer.transform(texts))[:, 1]


def evaluate(name, files, weak_negatives, data_dir):
    started = time.time()
    rows = guard_data.read_training(data_dir, files)
    if weak_negatives == "drop":
        rows = [r for r in rows if not r.weak_negative]
    train = [r for r in rows if not guard_data.is_validation(r.prompt)]
    # Validation: the chat files' held-out rows, as the recipe chooses on (reliable labels only).
    validation = [r for r in guard_data.read_training(data_dir, guard_data.CHAT_FILES)
                  if guard_data.is_validation(r.prompt)]
    score = fit(train)
    val_scores = score([r.text for r in validation])
    _, threshold = best_f1([r.label for r in validation], val_scores)
    result = {"baseline": name, "train_rows": len(train), "threshold": threshold, "sets": {}}
    for bench in guard_data.BENCHMARKS:
        pairs, labels = guard_data.read_benchmark(data_dir, bench)
        scores = score([guard_data.pair_text(p, r) for p, r in pairs])
        result["sets"][bench] = {
            "n": len(labels),
            "auprc": float(average_precision_score(labels, scores)),
            "f1_at_validation_threshold": f1_at(labels, scores, threshold),
            "best_f1": best_f1(labels, scores)[0],
        }
    result["seconds"] = round(time.time() - started, 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=guard_data.default_data_dir())
    parser.add_argument("--files", choices=["chat", "all", "both"], default="both",
                        help="chat: the 7 original files; all: the 19 files")
    parser.add_argument("--weak-negatives", choices=["safe", "drop"], default="safe",
                        help="label_scope=category negatives: taken as safe, or left out")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = parser.parse_args()
    runs = {"chat": [("TF-IDF + LR, 7 chat files", guard_data.CHAT_FILES)],
            "all": [("TF-IDF + LR, all 19 files", None)]}
    chosen = runs["chat"] + runs["all"] if args.files == "both" else runs[args.files]
    results = [evaluate(name, files, args.weak_negatives, args.data) for name, files in chosen]
    columns = [f"{b.split('.')[0]} F1 / best F1 / AUPRC" for b in guard_data.BENCHMARKS]
    print("| baseline (threshold from validation) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(guard_data.BENCHMARKS))
    for r in results:
        cells = [f"{s['f1_at_validation_threshold']:.3f} / {s['best_f1']:.3f} / {s['auprc']:.3f}"
                 for s in r["sets"].values()]
        print(f"| {r['baseline']} ({r['threshold']:.3f}; weak negatives {args.weak_negatives}) | "
              + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
