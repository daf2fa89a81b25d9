#!/usr/bin/env python3
"""`harmaug serve` vs the FastAPI + transformers server a Python user would write
(bench/reference_server.py), side by side in one run, on loopback only.

Both serve the same weights (all-MiniLM-L6-v2 + a fixed random head, f32, max length 512) with
the same batching settings (up to 32 inputs, 5 ms wait); the load generator
(native-train/examples/serve_load.rs) sends the first 1,000 ToxicChat training prompts, one per
request, at concurrency 1, 8 and 64, and reports throughput and p50/p95/p99 latency. Then, with
--soak-s, harmaug alone runs at --soak-load (default 80%) of its measured concurrency-64
throughput for that long: errors and resident-memory growth after warm-up.

    pip install torch transformers fastapi uvicorn
    cargo build --release -p harmaug --bins --example serve_load
    python3 bench/serve_load.py [--n 1000] [--soak-s 600] [--binary B]
"""
import argparse
import functools
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from score_minilm import DATA, ROOT, make_model  # noqa: E402

RELEASE = ROOT / "target" / "release"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, process, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server never became ready")


def start_harmaug(model_dir, port, binary=RELEASE / "harmaug"):
    command = [str(binary), "serve", "--model", str(model_dir), "--port", str(port),
               "--batch-size", "32", "--max-wait-ms", "5"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_reference(model_dir, port):
    command = [sys.executable, str(ROOT / "bench" / "reference_server.py"), "--model", str(model_dir),
               "--port", str(port), "--max-batch", "32", "--max-wait-ms", "5"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load(port, prompts_file, concurrency, extra=()):
    command = [str(RELEASE / "examples" / "serve_load"), "--url",
               f"http://127.0.0.1:{port}/v1/moderations", "--prompts", str(prompts_file),
               "--concurrency", str(concurrency), *extra]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def scores_of(port, prompts):
    body = json.dumps({"input": prompts}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/moderations", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return [x["category_scores"]["harmful"] for x in json.load(r)["results"]]


def measure(name, start, model_dir, prompts_file, levels, sample):
    port = free_port()
    process = start(model_dir, port)
    try:
        wait_ready(port, process)
        load(port, prompts_file, 4, ["--requests", "64"])  # warm-up
        rows = {c: load(port, prompts_file, c) for c in levels}
        return rows, scores_of(port, sample)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def soak(model_dir, prompts_file, rate, seconds):
    port = free_port()
    process = start_harmaug(model_dir, port)
    try:
        wait_ready(port, process)
        return load(port, prompts_file, 64, ["--rate", f"{rate:.1f}", "--duration-s", str(seconds),
                                             "--pid", str(process.pid)])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--soak-s", type=float, default=0)
    parser.add_argument("--soak-load", type=float, default=0.8)
    parser.add_argument("--soak-rate", type=float, help="soak alone at this many req/s (no comparison)")
    parser.add_argument("--binary", default=str(RELEASE / "harmaug"), help="the harmaug binary to serve")
    args = parser.parse_args()
    start_ours = functools.partial(start_harmaug, binary=args.binary)
    levels = [int(c) for c in args.levels.split(",")]
    with open(DATA) as f:
        prompts = [json.loads(line)["prompt"] for _, line in zip(range(args.n), f)]
    print(f"{os.cpu_count()} cores; {len(prompts)} prompts from {DATA.name}, one per request")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = pathlib.Path(tmp) / "minilm-head"
        make_model(model_dir)
        prompts_file = pathlib.Path(tmp) / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        if args.soak_rate:
            return report_soak(soak(model_dir, prompts_file, args.soak_rate, args.soak_s), args.soak_rate, args)
        sample = prompts[:16]
        ours, our_scores = measure("harmaug", start_ours, model_dir, prompts_file, levels, sample)
        ref, ref_scores = measure("reference", start_reference, model_dir, prompts_file, levels, sample)
        drift = max(abs(a - b) for a, b in zip(our_scores, ref_scores))
        print(f"max |Δscore| harmaug vs reference on {len(sample)} prompts: {drift:.2e}\n")
        print("| concurrency | harmaug req/s | p50 / p95 / p99 ms | FastAPI+transformers req/s "
              "| p50 / p95 / p99 ms | throughput ratio | errors |")
        print("|---|---|---|---|---|---|---|")
        for c in levels:
            a, b = ours[c], ref[c]
            print(f"| {c} | {a['throughput']:.1f} | {a['p50_ms']:.1f} / {a['p95_ms']:.1f} / "
                  f"{a['p99_ms']:.1f} | {b['throughput']:.1f} | {b['p50_ms']:.1f} / "
                  f"{b['p95_ms']:.1f} / {b['p99_ms']:.1f} | {a['throughput'] / b['throughput']:.2f}× "
                  f"| {a['errors']} / {b['errors']} |")
        if args.soak_s > 0:
            rate = args.soak_load * ours[max(levels)]["throughput"]
            report_soak(soak(model_dir, prompts_file, rate, args.soak_s), rate, args)


def report_soak(result, rate, args):
    first, last = result["rss_kb_peak_first_third"], result["rss_kb_peak_last_third"]
    growth = last / first - 1
    print(f"\nsoak: {args.soak_s:.0f} s at {rate:.1f} req/s: {result['ok']} answered, "
          f"{result['errors']} errors {result['first_errors']}, p50 / p99 {result['p50_ms']:.1f} / "
          f"{result['p99_ms']:.1f} ms, peak RSS {first / 1024:.0f} MB in the first third after "
          f"warm-up → {last / 1024:.0f} MB in the last ({growth:+.1%}; {result['rss_samples']} "
          f"samples, every 0.5 s)")


if __name__ == "__main__":
    main()
