#!/usr/bin/env python3
"""The student's data mixture: which training rows it sees, how often, with which labels.

Naively mixed by row count, the 113k toxicity rows (tweets about groups) crowd out the chat
requests and responses a chat guard must judge (measured: ToxicChat falls). So draws are dealt
per cell — (class, group) with weak negatives (label_scope "category") a cell of their own — at
set shares, with replacement, from the non-validation rows:

    unsafe chat 0.30, unsafe toxicity 0.20,
    safe chat 0.30, safe toxicity 0.10, weak negatives 0.10,
    and synthetic rows (if given) take --synth-share of the file, their class from the teacher.

    recipes/mix.py draw  --draws N --seed S --out FILE.json [--groups chat] [--pair-share P]
        (which rows, no text; --pair-share: that fraction of each chat cell's draws goes to its
        prompt + response rows, which the response-level benchmarks judge)
    recipes/mix.py write --draw FILE.json --out train.jsonl [--synthetic rows.jsonl ...]
        (each synthetic file with its teacher scores beside it: rows.labels.jsonl)
    recipes/mix.py rows --groups chat --out FILE.jsonl  # labelled rows with ids, for EDA
    recipes/mix.py validation --out DIR   # the held-out rows, for harmaug eval: two files

`write` joins the draw with the teacher's committed labels (recipes/default-model/teacher/) and
writes the JSONL `harmaug distill` reads: `prompt`, `response`?, `label` (reliable rows only),
`teacher_score`. A weak negative gets no `label`: its hard label is the teacher's verdict.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import guard_data  # noqa: E402

SHARES = {
    ("unsafe", "chat"): 0.30,
    ("unsafe", "toxicity"): 0.20,
    ("safe", "chat"): 0.30,
    ("safe", "toxicity"): 0.10,
    ("weak", "toxicity"): 0.10,
}
LABELS_DIR = pathlib.Path(__file__).resolve().parent / "default-model" / "teacher"


def cell_of(row):
    kind = "weak" if row.weak_negative else ("unsafe" if row.label else "safe")
    return kind, row.group


def draw(rows, draws, seed, groups=("chat", "toxicity"), pair_share=None):
    """Indices into `rows` (non-validation only, of `groups`), `draws` of them, dealt by SHARES
    (renormalised over the cells present); with `pair_share`, each chat cell's share is split
    between its prompt + response rows (that fraction) and its prompt-only rows."""
    cells = {}
    for i, r in enumerate(rows):
        if r.group in groups and not guard_data.is_validation(r.prompt):
            cells.setdefault(cell_of(r), []).append(i)
    rng = np.random.default_rng(seed)
    present = {c: s for c, s in SHARES.items() if c in cells}
    total = sum(present.values())
    if pair_share is not None:
        cells, present = split_pairs(rows, cells, present, pair_share)
    chosen = []
    for cell, share in present.items():
        chosen.extend(rng.choice(cells[cell], size=round(draws * share / total), replace=True))
    rng.shuffle(chosen)
    return [int(i) for i in chosen]


def split_pairs(rows, cells, shares, pair_share):
    """Each chat cell as two: its pair rows with `pair_share` of its share, the rest with the
    remainder (a cell without pairs keeps its whole share)."""
    split_cells, split_shares = {}, {}
    for cell, share in shares.items():
        if cell[1] != "chat":
            split_cells[cell], split_shares[cell] = cells[cell], share
            continue
        pairs = [i for i in cells[cell] if rows[i].response]
        prompts = [i for i in cells[cell] if not rows[i].response]
        parts = [(cell + ("pairs",), pairs, pair_share), (cell + ("prompts",), prompts, 1 - pair_share)]
        parts = [part for part in parts if part[1]]
        for name, members, fraction in parts:
            split_cells[name] = members
            split_shares[name] = share * (fraction if len(parts) == 2 else 1.0)
    return split_cells, split_shares


def read_draw(path):
    """The drawn rows as (file, line) pairs, checked against the shared files' keys."""
    return [tuple(x) for x in json.loads(pathlib.Path(path).read_text())["rows"]]


def teacher_labels():
    """(file, line) → (key, teacher_score) from the committed labels."""
    labels = {}
    for path in sorted(LABELS_DIR.glob("*.labels.jsonl")):
        shared_file = path.name.removesuffix(".labels.jsonl") + ".jsonl"
        for line in open(path, encoding="utf-8"):
            entry = json.loads(line)
            labels[(shared_file, entry["line"])] = (entry["key"], entry["teacher_score"])
    return labels


def student_row(row, teacher_score):
    out = {"prompt": row.prompt}
    if row.response:
        out["response"] = row.response
    if not row.weak_negative:
        out["label"] = row.label
    out["teacher_score"] = teacher_score
    return out


def write(draw_path, out_path, synthetic, synth_share, seed):
    rows = {(r.file, r.line): r for r in guard_data.read_training()}
    labels = teacher_labels()
    written = 0
    with open(out_path, "w", encoding="utf-8") as out:
        for file, line in read_draw(draw_path):
            row = rows[(file, line)]
            key, score = labels.get((file, line), (None, None))
            if key != row.key:
                sys.exit(f"{file}:{line}: no teacher label for this row (or the file changed); "
                         "run recipes/teacher.py combine")
            out.write(json.dumps(student_row(row, score)) + "\n")
            written += 1
        written += write_synthetic(out, synthetic, round(written * synth_share / (1 - synth_share))
                                   if synthetic else 0, seed)
    print(f"{written} rows → {out_path}")


def labelled_synthetic(path):
    """The rows of an augmentation file (harmaug augment output: generated prompts, pairs, EDA
    variants) joined by id with the teacher's scores beside it (FILE.labels.jsonl, from
    recipes/teacher.py label)."""
    labels_path = path.with_name(path.name.removesuffix(".jsonl") + ".labels.jsonl")
    if not labels_path.exists():
        sys.exit(f"{labels_path}: missing; run the recipe's `label` stage")
    scores = {}
    for line in open(labels_path, encoding="utf-8"):
        entry = json.loads(line)
        scores[entry["id"]] = entry["teacher_score"]
    rows = []
    for number, line in enumerate(open(path, encoding="utf-8"), start=1):
        row = json.loads(line)
        if row["id"] not in scores:
            sys.exit(f"{path}:{number}: id {row['id']} has no teacher score in {labels_path}")
        # EDA variants keep their source row's hard label; synthetic rows have none (the
        # teacher's verdict serves).
        rows.append({"prompt": row["prompt"], "response": row.get("response"),
                     "label": row.get("label"), "teacher_score": scores[row["id"]]})
    return rows


def write_synthetic(out, paths, count, seed):
    """`count` draws from the teacher-labelled synthetic rows."""
    pool = [row for path in paths for row in labelled_synthetic(path)]
    if not pool or not count:
        return 0
    rng = np.random.default_rng(seed + 1)
    for i in rng.choice(len(pool), size=count, replace=True):
        kept = {k: v for k, v in pool[i].items() if v is not None and v != ""}
        out.write(json.dumps(kept) + "\n")
    return count


def write_rows(out_path, groups):
    """The labelled non-validation rows of `groups` with ids (file:line): input for `harmaug
    augment eda`, whose variants the teacher then labels."""
    with open(out_path, "w", encoding="utf-8") as out:
        for row in guard_data.read_training():
            if row.group in groups and not row.weak_negative and not guard_data.is_validation(row.prompt):
                entry = {"id": f"{row.file}:{row.line}", "prompt": row.prompt, "label": row.label}
                if row.response:
                    entry["response"] = row.response
                out.write(json.dumps(entry) + "\n")


def write_validation(out_dir):
    """DIR/validation-chat.jsonl (held-out rows of the chat files) and
    DIR/validation-toxicity.jsonl (held-out toxicity rows with a reliable label): models are
    chosen on these, never on the benchmarks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {g: open(out_dir / f"validation-{g}.jsonl", "w", encoding="utf-8")
             for g in ("chat", "toxicity")}
    for row in guard_data.read_training():
        if guard_data.is_validation(row.prompt) and not row.weak_negative:
            out = {"prompt": row.prompt, "label": row.label}
            if row.response:
                out["response"] = row.response
            files[row.group].write(json.dumps(out) + "\n")
    for handle in files.values():
        handle.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drawing = commands.add_parser("draw")
    drawing.add_argument("--draws", type=int, required=True)
    drawing.add_argument("--seed", type=int, default=7)
    drawing.add_argument("--out", type=pathlib.Path, required=True)
    drawing.add_argument("--groups", default="chat,toxicity",
                         help="source groups to draw from (chat: the 7 chat files)")
    drawing.add_argument("--pair-share", type=float,
                         help="fraction of each chat cell's draws from its prompt + response rows")
    writing = commands.add_parser("write")
    writing.add_argument("--draw", type=pathlib.Path, required=True)
    writing.add_argument("--out", type=pathlib.Path, required=True)
    writing.add_argument("--synthetic", type=pathlib.Path, action="append", default=[])
    writing.add_argument("--synth-share", type=float, default=0.1)
    writing.add_argument("--seed", type=int, default=7)
    listing = commands.add_parser("rows", help="labelled training rows with ids (for EDA)")
    listing.add_argument("--groups", default="chat")
    listing.add_argument("--out", type=pathlib.Path, required=True)
    held_out = commands.add_parser("validation")
    held_out.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    if args.command == "validation":
        write_validation(args.out)
    elif args.command == "rows":
        write_rows(args.out, args.groups.split(","))
    elif args.command == "draw":
        rows = guard_data.read_training()
        chosen = draw(rows, args.draws, args.seed, args.groups.split(","), args.pair_share)
        listed = [[rows[i].file, rows[i].line] for i in chosen]
        args.out.write_text(json.dumps({"draws": args.draws, "seed": args.seed,
                                        "groups": args.groups, "pair_share": args.pair_share,
                                        "shares":
                                        {f"{k}/{g}": s for (k, g), s in SHARES.items()},
                                        "rows": listed}) + "\n")
        print(f"{len(chosen)} draws ({len(set(chosen))} distinct rows) → {args.out}")
    else:
        write(args.draw, args.out, args.synthetic, args.synth_share, args.seed)


if __name__ == "__main__":
    main()
