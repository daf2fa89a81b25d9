#!/usr/bin/env python3
"""harmaug on a GPU vs PyTorch on the same GPU, in one run (driven by bench/gpu.sh).

Parts, each timed: parity of `harmaug score` with the transformers logits of every two-label
fixture; scoring throughput of all-MiniLM-L6-v2 and of a DeBERTa-v3-large-shaped model
(harmaug f32 vs PyTorch f32 and bf16 autocast); one `distill` run on the DeBERTa-v3-large shape
(training examples/s, median over the updates after the first, and peak GPU memory read from
nvidia-smi for each engine's own process) vs a PyTorch loop of the same recipe in f32 and bf16
autocast. Every engine runs as its own process so each one's memory is its own.

`--mode dry-run` runs every part on `--backend wgpu` with PyTorch on the CPU, tiny shapes and
few rows: it proves the script works (CI), not how fast anything is.
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "train" / "prompts_toxicchat0124_train.jsonl"
ASSETS = pathlib.Path.home() / ".cache/harmaug/assets"
MINILM = pathlib.Path(os.environ.get("HARMAUG_MINILM", ASSETS / "all-MiniLM-L6-v2"))
DEBERTA_TOKENIZER = ASSETS / "deberta-v3-tokenizer/tokenizer.json"
PARITY_FIXTURES = ["bert-tiny-f32", "bert-tiny-f16", "bert-tiny-bf16", "deberta-tiny-b8", "deberta-tiny-b256"]
# What each mode measures: (DeBERTa layers, hidden, heads), rows, batch sizes and lengths.
MODES = {
    "cuda": dict(backend="cuda", torch_device="cuda", deberta=(24, 1024, 16), minilm_rows=4000, score_batch=64,
                 deberta_rows=512, deberta_length=512, train_steps=6, train_batch=32, train_micro=16,
                 train_length=512),
    "dry-run": dict(backend="wgpu", torch_device="cpu", deberta=(2, 64, 4), minilm_rows=48, score_batch=16,
                    deberta_rows=16, deberta_length=128, train_steps=3, train_batch=8, train_micro=4,
                    train_length=64),
}


class GpuMemoryPeak:
    """Largest GPU memory (MiB) that nvidia-smi reports for one process, polled every 100 ms;
    None without nvidia-smi (the dry run)."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, None, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.wait(0.1):
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
            except FileNotFoundError:
                return
            for line in out.splitlines():
                pid, used = (field.strip() for field in line.split(","))
                if int(pid) == self.pid:
                    self.peak = max(self.peak or 0, int(used))

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.peak


def run_measured(command):
    """Runs `command`; returns (stdout, stderr, peak GPU MiB or None). Fails loudly."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "NO_COLOR": "1"})
    memory = GpuMemoryPeak(child.pid)
    out, err = child.communicate()
    peak = memory.finish()
    if child.returncode != 0:
        sys.exit(f"failed ({child.returncode}): {' '.join(map(str, command))}\n{err[-4000:]}")
    return out, err, peak


def prompts(n):
    with open(DATA) as f:
        return [json.loads(line)["prompt"] for _, line in zip(range(n), f)]


def long_texts(n, words):
    """n texts of `words` words each, from ToxicChat prompts joined end to end."""
    pool = " ".join(prompts(2639)).split()
    return [" ".join(pool[(i * words) % len(pool):][:words]) for i in range(n)]


# ---- the PyTorch side: each call runs in a child process of this script ("--child ...") ----

def torch_setup(device):
    import torch
    if device == "cpu":
        torch.set_num_threads(os.cpu_count())
    return torch


def child_score(model_dir, texts_file, batch, length, device, precision):
    torch = torch_setup(device)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    texts = json.loads(pathlib.Path(texts_file).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    model = model.to(device).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    scores = [0.0] * len(texts)
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        for i in range(0, len(order), batch):
            chunk = order[i:i + batch]
            enc = tokenizer([texts[j] for j in chunk], truncation=True, max_length=length, padding=True,
                            return_tensors="pt").to(device)
            for j, p in zip(chunk, model(**enc).logits.float().softmax(-1)[:, 1].tolist()):
                scores[j] = p
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "scores": scores}))


def child_train(model_dir, rows_file, steps, batch, micro, length, device, precision):
    """The distill recipe's update (CE + KL on teacher scores, clip 1.0, AdamW, dropout on)."""
    torch = torch_setup(device)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    rows = [json.loads(line) for line in pathlib.Path(rows_file).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.1)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    rates = []
    for step in range(steps):
        start = time.perf_counter()
        batch_rows = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        for m in range(0, batch, micro):
            part = batch_rows[m:m + micro]
            enc = tokenizer([r["prompt"] for r in part], truncation=True, max_length=length, padding=True,
                            return_tensors="pt").to(device)
            with autocast:
                log_p = torch.log_softmax(model(**enc).logits.float(), -1)
            t = torch.tensor([r["teacher_score"] for r in part], device=device)
            teacher = torch.stack([1 - t, t], -1)
            hard = torch.tensor([r["label"] for r in part], device=device)
            ce = torch.nn.functional.nll_loss(log_p, hard, reduction="sum")
            kl = (teacher * (teacher.clamp_min(1e-12).log() - log_p)).sum()
            ((0.5 * ce + 0.5 * kl) / batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(batch / (time.perf_counter() - start))
    print(json.dumps({"examples_per_s": statistics.median(rates[1:])}))


def torch_child(*args):
    out, _, peak = run_measured([sys.executable, __file__, "--child", *map(str, args)])
    return json.loads(out.splitlines()[-1]), peak


# ---- the parts ----

def make_deberta(out, mode):
    """A random DeBERTa-v3 classifier of the mode's shape with the real v3 tokenizer."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast
    torch.manual_seed(0)
    layers, hidden, heads = mode["deberta"]
    config = DebertaV2Config(vocab_size=128100, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512,
                             relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"],
                             share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                             type_vocab_size=0, layer_norm_eps=1e-7)
    DebertaV2ForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    DebertaV2TokenizerFast(tokenizer_file=str(DEBERTA_TOKENIZER)).save_pretrained(out)


def minilm_with_head(out):
    """all-MiniLM-L6-v2 + a classifier head drawn once, saved so both engines load the same."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2).save_pretrained(out)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(out)
    return out


def parity(binary, backend):
    """Largest |Δscore| of `harmaug score` vs the fixtures' transformers logits."""
    import math
    worst = 0.0
    for name in PARITY_FIXTURES:
        fixture = ROOT / "tests/fixtures" / name
        reference = json.loads((fixture / "reference.json").read_text())
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as rows:
            rows.write("".join(json.dumps(i) + "\n" for i in reference["inputs"]))
            rows.flush()
            out, _, _ = run_measured([binary, "score", "--model", fixture, "--input", rows.name, "--backend",
                                      backend, "--max-length", str(reference["max_length"]), "--long-input",
                                      "truncate"])
        # harmaug's default: the label named unsafe, else label 1.
        labels = json.loads((fixture / "config.json").read_text()).get("id2label", {})
        unsafe = next((int(i) for i, label in labels.items() if label == "unsafe"), 1)
        for line, logits in zip(out.splitlines(), reference["logits_single"]):
            expected = math.exp(logits[unsafe]) / sum(math.exp(x) for x in logits)
            worst = max(worst, abs(json.loads(line)["score"] - expected))
    if worst > 1e-4:
        sys.exit(f"parity failed on {backend}: max |Δscore| {worst:e} > 1e-4")
    return worst


def harmaug_score(binary, model_dir, texts_file, batch, length, backend):
    texts = json.loads(pathlib.Path(texts_file).read_text())
    rows = pathlib.Path(texts_file).with_suffix(".jsonl")
    rows.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    out, err, peak = run_measured([binary, "score", "--model", model_dir, "--input", rows, "--batch-size",
                                   str(batch), "--max-length", str(length), "--backend", backend])
    seconds = float(err.split("seconds=")[1].split()[0])
    return seconds, [json.loads(line)["score"] for line in out.splitlines()], peak


def scoring(binary, name, model_dir, texts, batch, length, mode, table):
    texts_file = pathlib.Path(tempfile.mkdtemp()) / "texts.json"
    texts_file.write_text(json.dumps(texts))
    seconds, scores, peak = harmaug_score(binary, model_dir, texts_file, batch, length, mode["backend"])
    reference = None
    for precision in ["f32", "bf16"]:
        result, torch_peak = torch_child("score", model_dir, texts_file, batch, length, mode["torch_device"],
                                         precision)
        if precision == "f32":
            reference = result["seconds"]
            drift = max(abs(a - b) for a, b in zip(scores, result["scores"]))
        table.append((f"score {name}, {len(texts)} × ≤{length} tokens, batch {batch}",
                      f"PyTorch {precision}", f"{len(texts) / result['seconds']:.1f} rows/s",
                      f"{reference / result['seconds']:.2f}", torch_peak, ""))
    table.append((f"score {name}, {len(texts)} × ≤{length} tokens, batch {batch}", f"harmaug f32 ({mode['backend']})",
                  f"{len(texts) / seconds:.1f} rows/s", f"**{reference / seconds:.2f}**", peak,
                  f"max |Δscore| vs PyTorch f32 {drift:.1e}"))


def training(binary, model_dir, mode, table):
    work = pathlib.Path(tempfile.mkdtemp())
    texts = long_texts(mode["train_batch"] * mode["train_steps"], mode["train_length"])
    rows = work / "train.jsonl"
    rows.write_text("".join(json.dumps({"prompt": t, "label": i % 2, "teacher_score": 0.25 + 0.5 * (i % 2)}) + "\n"
                            for i, t in enumerate(texts)))
    what = (f"distill DeBERTa-v3-large shape, updates of {mode['train_batch']} × {mode['train_length']} tokens "
            f"(micro-batches of {mode['train_micro']})")
    reference = None
    for precision in ["f32", "bf16"]:
        result, peak = torch_child("train", model_dir, rows, mode["train_steps"], mode["train_batch"],
                                   mode["train_micro"], mode["train_length"], mode["torch_device"], precision)
        reference = reference or result["examples_per_s"]
        table.append((what, f"PyTorch {precision}", f"{result['examples_per_s']:.2f} examples/s",
                      f"{result['examples_per_s'] / reference:.2f}", peak, ""))
    out = work / "student"
    _, _, peak = run_measured([binary, "distill", "--model", model_dir, "--train", rows, "--out", out,
                               "--backend", mode["backend"], "--batch-size", str(mode["train_batch"]),
                               "--micro-batch-size", str(mode["train_micro"]), "--max-length",
                               str(mode["train_length"]), "--max-steps", str(mode["train_steps"]),
                               "--val-fraction", "0", "--save-every", "1000000"])
    rates = [json.loads(line)["examples_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "examples_per_s" in line]
    rate = statistics.median(rates[1:])
    table.append((what, f"harmaug f32 ({mode['backend']})", f"{rate:.2f} examples/s", f"**{rate / reference:.2f}**",
                  peak, ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, default="cuda")
    parser.add_argument("--binary", default=str(ROOT / "target/release/harmaug"))
    parser.add_argument("--build-seconds", type=int, default=0)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "score":
            return child_score(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4], rest[5])
        return child_train(rest[0], rest[1], *map(int, rest[2:6]), rest[6], rest[7])

    import torch
    mode = MODES[args.mode]
    times = [("build", args.build_seconds)]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"mode {args.mode}: harmaug --backend {mode['backend']}, PyTorch {torch.__version__} on "
          f"{mode['torch_device']} ({gpu}); {platform.machine()}, {os.cpu_count()} cores")
    table = []
    start = time.perf_counter()
    worst = parity(args.binary, mode["backend"])
    times.append(("parity", time.perf_counter() - start))
    table.append((f"parity: {len(PARITY_FIXTURES)} fixtures vs transformers", f"harmaug ({mode['backend']})",
                  "", "", None, f"max |Δscore| {worst:.1e}"))

    start = time.perf_counter()
    minilm = minilm_with_head(pathlib.Path(tempfile.mkdtemp()) / "minilm")
    scoring(args.binary, "all-MiniLM-L6-v2", minilm, prompts(mode["minilm_rows"]), mode["score_batch"], 512, mode,
            table)
    deberta = pathlib.Path(tempfile.mkdtemp()) / "deberta"
    make_deberta(deberta, mode)
    texts = long_texts(mode["deberta_rows"], mode["deberta_length"])
    scoring(args.binary, "DeBERTa-v3-large shape", deberta, texts, mode["score_batch"] // 2, mode["deberta_length"],
            mode, table)
    times.append(("scoring", time.perf_counter() - start))
    start = time.perf_counter()
    training(args.binary, deberta, mode, table)
    times.append(("distill", time.perf_counter() - start))

    print("\n| what | engine | throughput | × PyTorch f32 | peak GPU MiB | note |\n|---|---|---|---|---|---|")
    for what, engine, rate, ratio, peak, note in table:
        print(f"| {what} | {engine} | {rate} | {ratio} | {peak if peak is not None else 'n/a'} | {note} |")
    print("\ntime per part: " + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in times)
          + f"; total {sum(s for _, s in times):.0f} s")


if __name__ == "__main__":
    main()
