#!/usr/bin/env python3
"""Embedded (in-process llama.cpp) vs llama-server generation on the same GGUF and machine
(issue: synthesis), side by side in one run.

1. Tokens/s: `harmaug augment respond` writes a 128-token-capped response to the same prompts,
   once through the embedded model and once through a llama-server started here (one request
   at a time, same sampling). Generated tokens are counted with the server's tokenizer; time
   is the command's wall time (prompt processing included on both sides).
   The alternative runtime, candle-transformers' quantized llama (bench/candle_llm, not part of
   the product), generates for the same chat-templated prompts, token ids from the server.
2. Prompts/hour of stage 1: `harmaug augment generate --num N` through each back end.

    scripts/setup.sh            # llama-server, SmolLM2 GGUF, harmaug
    cargo build --release -p harmaug
    python3 bench/llm_generation.py [--prompts 20] [--num 40]
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path.home() / ".cache/harmaug"
GGUF = pathlib.Path(os.environ.get("HARMAUG_SMOLLM2", CACHE / "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
SEEDS = ROOT.parent / "shared/data/train/prompts_harmful_seed.jsonl"
BENIGN = ROOT.parent / "shared/data/train/prompts_benign_alpaca.jsonl"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port):
    server = subprocess.Popen([str(CACHE / "bin/llama-server"), "-m", str(GGUF), "--host", "127.0.0.1",
                               "--port", str(port), "-c", "4096", "-np", "1", "-t", str(os.cpu_count())],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("llama-server did not start")


def count_tokens(port, texts):
    total = 0
    for text in texts:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/tokenize", data=json.dumps({"content": text}).encode(),
                                         headers={"Content-Type": "application/json"})
        total += len(json.load(urllib.request.urlopen(request))["tokens"])
    return total


def prompt_ids(port, prompts):
    """The chat-templated prompts as token ids, by llama-server's template and tokenizer."""
    lines = []
    for text in prompts:
        def post(path, body):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            return json.load(urllib.request.urlopen(request))
        rendered = post("/apply-template", {"messages": [{"role": "user", "content": text}]})["prompt"]
        ids = post("/tokenize", {"content": rendered, "add_special": True, "parse_special": True})["tokens"]
        lines.append(",".join(str(i) for i in ids))
    return "\n".join(lines) + "\n"


def candle_rate(port, prompts, tmp):
    manifest = ROOT / "bench/candle_llm/Cargo.toml"
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(manifest)], check=True)
    ids = tmp / "prompt_ids.txt"
    ids.write_text(prompt_ids(port, prompts))
    eos_text = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/props"))["eos_token"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/tokenize",
                                     data=json.dumps({"content": eos_text, "parse_special": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    eos = json.load(urllib.request.urlopen(request))["tokens"][0]
    out = subprocess.run([str(ROOT / "bench/candle_llm/target/release/candle-llm-bench"), str(GGUF), str(ids), "128",
                          str(eos)], check=True, capture_output=True, text=True).stdout
    _, tokens, seconds, rate = (x.strip() for x in out.split(","))
    return int(tokens), float(seconds), float(rate)


def timed(args):
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--num", type=int, default=40)
    parser.add_argument("--binary", default=str(ROOT / "target/release/harmaug"))
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            prompts = tmp / "prompts.jsonl"
            with open(BENIGN) as f:
                rows = [json.loads(line) for _, line in zip(range(args.prompts), f)]
            prompts.write_text("".join(json.dumps({"id": str(i), "prompt": r["prompt"]}) + "\n" for i, r in enumerate(rows)))
            print(f"{GGUF.name}, {os.cpu_count()} cores; {args.prompts} prompts, responses up to 128 tokens, one request at a time")
            print("| back end | responses s | generated tokens | tokens/s | × llama-server |")
            print("|---|---|---|---|---|")
            rates = {}
            for name, model in [("llama-server", url), ("embedded", str(GGUF))]:
                out = tmp / f"pairs-{name}.jsonl"
                seconds = timed([args.binary, "augment", "respond", "--responder", model, "--input", str(prompts),
                                 "--out", str(out), "--max-new-tokens", "128", "--concurrency", "1"])
                responses = [json.loads(line)["response"] for line in out.read_text().splitlines()]
                tokens = count_tokens(port, responses)
                rates[name] = tokens / seconds
                ratio = rates[name] / rates["llama-server"]
                print(f"| {name} | {seconds:.1f} | {tokens} | {rates[name]:.1f} | {ratio:.2f} |", flush=True)
            tokens, seconds, rate = candle_rate(port, [r["prompt"] for r in rows], tmp)
            print(f"| candle-transformers 0.11 quantized llama (model load excluded) | {seconds:.1f} | {tokens} | "
                  f"{rate:.1f} | {rate / rates['llama-server']:.2f} |", flush=True)
            print()
            print("| back end | stage 1: kept prompts | seconds | prompts/hour |")
            print("|---|---|---|---|")
            for name, model in [("llama-server", url), ("embedded", str(GGUF))]:
                out = tmp / f"generated-{name}.jsonl"
                seconds = timed([args.binary, "augment", "generate", "--generator", model, "--seeds", str(SEEDS),
                                 "--num", str(args.num), "--out", str(out), "--concurrency", "1"])
                print(f"| {name} | {args.num} | {seconds:.1f} | {args.num / seconds * 3600:.0f} |", flush=True)
    finally:
        server.kill()


if __name__ == "__main__":
    main()
