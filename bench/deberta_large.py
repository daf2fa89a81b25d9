#!/usr/bin/env python3
"""DeBERTa-v3-large-shaped forward on CPU: harmaug vs PyTorch/transformers, side by side.

A random DebertaV2ForSequenceClassification with deberta-v3-large's shape (24 layers, hidden
1024, 16 heads, vocabulary 128,100, 256 position buckets; ~435M parameters, 1.7 GB of f32
safetensors) scores one batch of 8 inputs truncated to 512 tokens. Each engine runs in its own
process: time of the forward pass (tokenisation included, loading excluded) and the process's
peak RSS. A third run measures harmaug loading alone (one empty input) against the file size.

    pip install torch transformers
    cargo build --release -p harmaug
    python3 bench/deberta_large.py [--binary OTHER_HARMAUG ...]

Each `--binary` (e.g. a build from before a change) is timed in the same run, on a row of its
own, after target/release/harmaug.
"""
import argparse
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOKENIZER = pathlib.Path.home() / ".cache/harmaug/assets/deberta-v3-tokenizer/tokenizer.json"
DATA = ROOT.parent / "shared" / "data" / "train" / "prompts_toxicchat0124_train.jsonl"
BINARY = ROOT / "target" / "release" / "harmaug"


def make_model(out):
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast
    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096, max_position_embeddings=512, relative_attention=True,
                             position_buckets=256, pos_att_type=["p2c", "c2p"], share_att_key=True,
                             norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0,
                             layer_norm_eps=1e-7, attn_implementation="eager")
    model = DebertaV2ForSequenceClassification(config)
    model.save_pretrained(out, safe_serialization=True)
    DebertaV2TokenizerFast(tokenizer_file=str(TOKENIZER)).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def texts():
    """8 inputs longer than 512 tokens: ToxicChat prompts joined end to end."""
    with open(DATA) as f:
        prompts = [json.loads(line)["prompt"] for _, line in zip(range(400), f)]
    joined = " ".join(prompts).split()
    return [" ".join(joined[i * 700:(i + 1) * 700]) for i in range(8)]


def torch_child(model_dir):
    import torch
    from transformers import AutoTokenizer, DebertaV2ForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = DebertaV2ForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    start = time.perf_counter()
    with torch.inference_mode():
        batch = tokenizer(texts(), truncation=True, max_length=512, padding=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)[:, 1].tolist()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "shape": list(batch["input_ids"].shape), "scores": probs}))


def measure_child(command):
    """Runs `command` as this process's only child and reports its peak RSS on stderr."""
    code = subprocess.run(command).returncode
    print(f"PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
    sys.exit(code)


def peak_rss_mb(command, **kwargs):
    """(output, peak RSS in MiB) of `command`, measured in a wrapper of its own."""
    out = subprocess.run([sys.executable, __file__, "--measure", *command],
                         capture_output=True, text=True, check=True, **kwargs)
    return out, int(re.search(r"PEAK_RSS_KB=(\d+)", out.stderr).group(1)) / 1024


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-child":
        return torch_child(sys.argv[2])
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        return measure_child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", action="append", default=[], type=pathlib.Path,
                        help="another harmaug binary to time in the same run")
    binaries = parser.parse_args().binary
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = tmp / "deberta-v3-large-random"
        params = make_model(model_dir)
        size_mb = (model_dir / "model.safetensors").stat().st_size / 2**20
        print(f"model: {params / 1e6:.1f}M parameters, model.safetensors {size_mb:.0f} MiB; {os.cpu_count()} cores")
        rows = tmp / "rows.jsonl"
        rows.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts()))
        empty = tmp / "empty.jsonl"
        empty.write_text(json.dumps({"prompt": ""}) + "\n")
        env = {**os.environ, "NO_COLOR": "1"}

        rows_out = []
        for binary in [BINARY, *binaries]:
            # Truncate like the PyTorch side: the CLI's default (chunk) scores every 512-token window.
            command = [str(binary), "score", "--model", str(model_dir), "--max-length", "512",
                       "--batch-size", "8", "--long-input", "truncate"]
            _, load_rss = peak_rss_mb(command + ["--input", str(empty)], env=env)
            print(f"{binary}: load only, peak RSS {load_rss:.0f} MiB = {load_rss / size_mb:.2f}× the checkpoint")
            out, h_rss = peak_rss_mb(command + ["--input", str(rows)], env=env)
            h_seconds = float(re.search(r"seconds=([0-9.e-]+)", out.stderr).group(1))
            h_scores = [json.loads(line)["score"] for line in out.stdout.splitlines()]
            rows_out.append((binary, h_seconds, h_rss, h_scores))
        out, t_rss = peak_rss_mb([sys.executable, __file__, "--torch-child", str(model_dir)], env=env)
        t = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"batch {t['shape'][0]} × {t['shape'][1]} tokens")
        print("| engine | forward s | × PyTorch | peak RSS MiB | max \\|Δscore\\| vs PyTorch |")
        print("|---|---|---|---|---|")
        print(f"| PyTorch | {t['seconds']:.1f} | 1.00 | {t_rss:.0f} | 0 |")
        for binary, h_seconds, h_rss, h_scores in rows_out:
            diff = max(abs(a - b) for a, b in zip(h_scores, t["scores"]))
            name = "harmaug (flex)" if binary == BINARY else f"harmaug `{binary}`"
            print(f"| {name} | {h_seconds:.1f} | {t['seconds'] / h_seconds:.2f} | {h_rss:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
