#!/usr/bin/env python3
"""The recipe's teacher: an ensemble stronger than any one student, whose averaged P(unsafe)
becomes the soft label of every training row (HarmAug labels every row with its teacher).

No 8B guard is reachable here, so the teacher is built from what this machine can train on all
labelled data, members of different kinds (an ensemble gains most from diverse members):
  tfidf-word   TF-IDF word 1–2-grams + logistic regression (scikit-learn)
  tfidf-char   TF-IDF character 2–5-grams + logistic regression
  minilm-SEED  all-MiniLM-L6-v2 fine-tuned in PyTorch (the teacher may be Python: only the
               student ships)
  …-dropweak   the same member trained without the weak negatives

Every member is cross-fitted: the non-validation rows are cut in two folds by their key, a model
trained on one fold labels the other, so no training row's soft label comes from a model that
saw that row (a teacher scoring its own training rows hands the student back the hard labels).
Validation rows and benchmarks get the mean of the two fold models.

    recipes/teacher.py member tfidf-word|tfidf-char|minilm-1 [--draws N]
    recipes/teacher.py combine [--members a,b,c]   # report + committed labels
    recipes/teacher.py label --input rows.jsonl --out labelled.jsonl   # e.g. synthetic rows

Members are cached in $WORK/teacher: MEMBER.npz (its scores) and MEMBER.foldK.pkl (its two fold
models, which `label` uses); a member with all three is not retrained. `combine` writes
recipes/default-model/teacher/FILE.labels.jsonl — `{"line", "key", "teacher_score",
"members"}` per row of each shared training file, no text — and prints each member and the
ensemble on validation.
"""

import argparse
import json
import os
import pathlib
import pickle
import sys
import time

import numpy as np
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import guard_data  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
LABELS_DIR = REPO / "recipes" / "default-model" / "teacher"
# Chosen on validation (the model card has the table): both n-gram kinds, each trained with and
# without the weak negatives.
DEFAULT_MEMBERS = ["tfidf-word", "tfidf-char", "tfidf-word-dropweak", "tfidf-char-dropweak"]


def work_dir():
    cache = pathlib.Path(os.environ.get("HARMAUG_CACHE", pathlib.Path.home() / ".cache/harmaug"))
    path = pathlib.Path(os.environ.get("WORK", cache / "default-model")) / "teacher"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fold_of(row):
    return int(row.key[:8], 16) % 2


def teacher_training_rows(rows, drop_weak):
    """What a member learns from: the non-validation rows. Weak negatives (label_scope
    "category": "not this kind of harm") are noisy safe rows, or left out (members named
    `…-dropweak`): then a member only ever sees those sources' positives, and calls most of
    their weak negatives unsafe (source style becomes the signal; measured in the model card).
    Every row, weak negatives included, is then labelled out of fold."""
    return [r for r in rows if not guard_data.is_validation(r.prompt)
            and not (r.weak_negative and drop_weak)]


# ---------------------------------------------------------------- bag-of-words members


class TfidfScorer:
    """A fitted bag-of-words member: P(unsafe) of (prompt, response) pairs. Picklable."""

    def __init__(self, vectorizer, model):
        self.vectorizer, self.model = vectorizer, model

    def __call__(self, pairs):
        texts = [guard_data.pair_text(p, r) for p, r in pairs]
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]


def tfidf_model(kind):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def fit(rows):
        if kind == "word":
            vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                         max_features=500_000)
        else:
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3,
                                         sublinear_tf=True, max_features=800_000)
        features = vectorizer.fit_transform([r.text for r in rows])
        model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=3000)
        model.fit(features, [r.label for r in rows])
        return TfidfScorer(vectorizer, model)

    return fit


# ---------------------------------------------------------------- MiniLM members (PyTorch)


def minilm_model(seed, draws, max_length=256, batch_size=32, lr=5e-5):
    """Fine-tunes all-MiniLM-L6-v2: class-balanced draws, half of each class from the chat
    files and half from the toxicity sets (so tweets do not crowd out chat requests), AdamW with
    weight decay 0.1 off biases/LayerNorm, 6% warm-up then linear decay, clip 1.0, CE."""
    import torch
    from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    base = pathlib.Path(os.environ.get(
        "MINILM", pathlib.Path.home() / ".cache/harmaug/assets/all-MiniLM-L6-v2"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(base / "tokenizer.json"),
                                        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                        unk_token="[UNK]", mask_token="[MASK]")

    def fit(rows):
        torch.manual_seed(seed)
        model = BertForSequenceClassification.from_pretrained(base, num_labels=2)
        encode = MiniLMScorer(model, tokenizer, max_length).encode
        rng = np.random.default_rng(seed)
        order = balanced_draws(rows, draws, rng)
        optimizer, schedule = adamw_with_schedule(model, lr, len(order) // batch_size)
        model.train()
        started = time.time()
        for step in range(len(order) // batch_size):
            batch = [rows[i] for i in order[step * batch_size:(step + 1) * batch_size]]
            inputs = encode([(r.prompt, r.response) for r in batch])
            labels = torch.tensor([r.label for r in batch])
            loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            if step % 50 == 0:
                rate = (step + 1) * batch_size / (time.time() - started)
                print(f"  step {step}/{len(order) // batch_size} loss {loss.item():.4f} "
                      f"{rate:.1f} rows/s", flush=True)
        model.eval()
        return MiniLMScorer(model, tokenizer, max_length)

    return fit


class MiniLMScorer:
    """A fine-tuned MiniLM member: P(unsafe) of (prompt, response) pairs, batched by length.
    Picklable (model and tokenizer together)."""

    def __init__(self, model, tokenizer, max_length):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def encode(self, pairs):
        limit = {"truncation": True, "max_length": self.max_length}
        if all(r is None for _, r in pairs):
            return self.tokenizer([p for p, _ in pairs], padding=True, return_tensors="pt",
                                  **limit)
        # Mixed batches: encode one at a time, then pad (pairs are two segments).
        encoded = [self.tokenizer(p, r, **limit) if r else self.tokenizer(p, **limit)
                   for p, r in pairs]
        return self.tokenizer.pad(encoded, return_tensors="pt")

    def __call__(self, pairs, batch_size=64):
        import torch

        order = sorted(range(len(pairs)), key=lambda i: len(guard_data.pair_text(*pairs[i])))
        scores = np.zeros(len(pairs))
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                logits = self.model(**self.encode([pairs[i] for i in chunk])).logits
                scores[chunk] = torch.softmax(logits, dim=-1)[:, 1].numpy()
        return scores


def balanced_draws(rows, draws, rng):
    """Row indices drawn with replacement: each class half the draws, and within a class each
    group (chat, toxicity) half of that class's draws (or all of it, if the other is empty)."""
    weights = np.zeros(len(rows))
    cells = {}
    for i, r in enumerate(rows):
        cells.setdefault((r.label, r.group), []).append(i)
    for (label, _), members in cells.items():
        groups_in_class = sum(1 for (other, _) in cells if other == label)
        weights[members] = 0.5 / groups_in_class / len(members)
    return rng.choice(len(rows), size=draws, replace=True, p=weights / weights.sum())


def adamw_with_schedule(model, lr, steps):
    import torch

    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, int(0.06 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup)))
    return optimizer, schedule


# ---------------------------------------------------------------- cross-fitting


def cross_fit(name, fit, rows, drop_weak):
    """Scores of every training row by the fold model that did not see it; validation rows and
    benchmarks by the mean of both fold models. `fit(rows)` returns a scorer of
    (prompt, response) pairs; each fold's is kept in $WORK/teacher/NAME.foldK.pkl for `label`."""
    pairs_of = lambda rs: [(r.prompt, r.response) for r in rs]  # noqa: E731
    trainable = teacher_training_rows(rows, drop_weak)
    scores = np.full(len(rows), np.nan)
    validation = [i for i, r in enumerate(rows) if guard_data.is_validation(r.prompt)]
    data_dir = guard_data.default_data_dir()
    benches = {b: guard_data.read_benchmark(data_dir, b)[0] for b in guard_data.BENCHMARKS}
    bench_scores = {b: np.zeros(len(p)) for b, p in benches.items()}
    for fold in (0, 1):
        started = time.time()
        model = fit([r for r in trainable if fold_of(r) != fold])
        with open(fold_path(name, fold), "wb") as handle:
            pickle.dump(model, handle)
        held_out = [i for i, r in enumerate(rows)
                    if fold_of(r) == fold and not guard_data.is_validation(r.prompt)]
        scores[held_out] = model(pairs_of([rows[i] for i in held_out]))
        scores[validation] = np.nan_to_num(scores[validation]) + 0.5 * model(
            pairs_of([rows[i] for i in validation]))
        for bench, pairs in benches.items():
            bench_scores[bench] += 0.5 * model(pairs)
        print(f"fold {fold}: {time.time() - started:.0f} s", flush=True)
    return scores, bench_scores


def fold_path(name, fold):
    return work_dir() / f"{name}.fold{fold}.pkl"


def run_member(name, draws):
    path = work_dir() / f"{name}.npz"
    if path.exists() and all(fold_path(name, k).exists() for k in (0, 1)):
        print(f"{name}: cached in {path}")
        return
    rows = guard_data.read_training()
    drop_weak = name.endswith("-dropweak")
    kind, variant = name.removesuffix("-dropweak").split("-", 1)
    fit = tfidf_model(variant) if kind == "tfidf" else minilm_model(int(variant), draws)
    scores, bench_scores = cross_fit(name, fit, rows, drop_weak)
    keys = np.array([f"{r.file}:{r.line}:{r.key}" for r in rows])
    np.savez(path, train=scores, keys=keys, **{f"bench:{b}": s for b, s in bench_scores.items()})
    print(f"{name}: written to {path}")


# ---------------------------------------------------------------- the ensemble


def load_member(name, rows):
    with np.load(work_dir() / f"{name}.npz") as archive:
        data = {k: archive[k] for k in archive.files}  # an NpzFile rereads on every [k]
    expected = np.array([f"{r.file}:{r.line}:{r.key}" for r in rows])
    if not np.array_equal(data["keys"], expected):
        sys.exit(f"{name}: cached member was made from other training files; delete it and rerun")
    return data


def validation_parts(rows):
    """Row indices of the two validation parts: held-out chat rows, and held-out toxicity rows
    with a reliable label (weak negatives say nothing about other kinds of harm)."""
    held = [i for i, r in enumerate(rows) if guard_data.is_validation(r.prompt)]
    return {
        "validation-chat": [i for i in held if rows[i].group == "chat"],
        "validation-toxicity": [i for i in held
                                if rows[i].group == "toxicity" and not rows[i].weak_negative],
    }


def report(names, members, ensemble, rows):
    parts = validation_parts(rows)
    data_dir = guard_data.default_data_dir()
    bench_labels = {b: guard_data.read_benchmark(data_dir, b)[1] for b in guard_data.BENCHMARKS}
    columns = list(parts) + [b.split(".")[0] for b in guard_data.BENCHMARKS]
    print("| teacher member (AUPRC) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, data in list(zip(names, members)) + [("**ensemble (mean)**", ensemble)]:
        cells = [average_precision_score([rows[i].label for i in idx], data["train"][idx])
                 for idx in parts.values()]
        cells += [average_precision_score(bench_labels[b], data[f"bench:{b}"])
                  for b in guard_data.BENCHMARKS]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def write_labels(names, members, ensemble, rows):
    """recipes/default-model/teacher/FILE.labels.jsonl: the ensemble's P(unsafe) of every row
    (and each member's), by line and key — references to ../shared/data, no text."""
    LABELS_DIR.mkdir(parents=True, exist_ok=True)
    by_file = {}
    for i, r in enumerate(rows):
        entry = {"line": r.line, "key": r.key,
                 "teacher_score": round(float(ensemble["train"][i]), 4),
                 "members": {n: round(float(m["train"][i]), 4) for n, m in zip(names, members)}}
        by_file.setdefault(r.file, []).append(json.dumps(entry))
    for name, lines in by_file.items():
        (LABELS_DIR / labels_name(name)).write_text("\n".join(lines) + "\n")
    print(f"labels of {len(rows)} rows in {len(by_file)} files under {LABELS_DIR}")


def labels_name(shared_file):
    """prompts_x.jsonl → prompts_x.labels.jsonl: named after its shared file, never mistaken
    for a copy of it."""
    return shared_file.removesuffix(".jsonl") + ".labels.jsonl"


def combine(names):
    rows = guard_data.read_training()
    members = [load_member(n, rows) for n in names]
    ensemble = {k: np.mean([m[k] for m in members], axis=0)
                for k in members[0] if k != "keys"}
    report(names, members, ensemble, rows)
    write_labels(names, members, ensemble, rows)


def read_rows(path):
    """JSONL rows to label: each needs a string `prompt` (`response` optional)."""
    rows = []
    for number, line in enumerate(open(path, encoding="utf-8"), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            sys.exit(f"{path}:{number}: not JSON: {error}")
        if not isinstance(row.get("prompt"), str):
            sys.exit(f"{path}:{number}: missing or non-string field `prompt`")
        rows.append(row)
    return rows


def label(names, input_path, out_path, draws):
    """Rows outside ../shared (synthetic prompts and pairs) get the ensemble's P(unsafe): the
    mean over members of both fold models' scores (no fold saw these rows). Written as
    {"id", "teacher_score"} lines."""
    rows = read_rows(input_path)
    pairs = [(r["prompt"], r.get("response") or None) for r in rows]
    by_member = {}
    for name in names:
        run_member(name, draws)  # a no-op when its fold models are cached; else trains them
        folds = [pickle.load(open(fold_path(name, k), "rb")) for k in (0, 1)]
        by_member[name] = np.mean([fold(pairs) for fold in folds], axis=0)
    ensemble = np.mean(list(by_member.values()), axis=0)
    # By id, no text: the rows stay in their own (committed) file; mix.py joins the two.
    with open(out_path, "w", encoding="utf-8") as out:
        for i, row in enumerate(rows):
            if not isinstance(row.get("id"), str):
                sys.exit(f"{input_path}:{i + 1}: a row to label needs a string `id`")
            entry = {"id": row["id"], "teacher_score": round(float(ensemble[i]), 4)}
            out.write(json.dumps(entry) + "\n")
    print(f"{len(rows)} rows labelled (mean of {','.join(names)}) → {out_path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    member = commands.add_parser("member", help="train one cross-fitted member (cached)")
    member.add_argument("name", help="tfidf-word, tfidf-char or minilm-SEED; a `-dropweak` "
                        "suffix leaves weak negatives out of its training")
    member.add_argument("--draws", type=int, default=24_000,
                        help="MiniLM: rows drawn per fold model (batches of 32)")
    together = commands.add_parser("combine", help="report members, write the ensemble's labels")
    together.add_argument("--members", default=",".join(DEFAULT_MEMBERS))
    labelling = commands.add_parser("label", help="label rows outside ../shared (JSONL)")
    labelling.add_argument("--input", type=pathlib.Path, required=True)
    labelling.add_argument("--out", type=pathlib.Path, required=True)
    labelling.add_argument("--members", default=",".join(DEFAULT_MEMBERS))
    labelling.add_argument("--draws", type=int, default=24_000,
                           help="MiniLM members trained on the way: rows drawn per fold model")
    args = parser.parse_args()
    if args.command == "member":
        run_member(args.name, args.draws)
    elif args.command == "combine":
        combine(args.members.split(","))
    else:
        label(args.members.split(","), args.input, args.out, args.draws)


if __name__ == "__main__":
    main()
