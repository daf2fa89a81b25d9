#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/TARGET/) from the repository's own
fixtures and small hand-made samples; no shared data set is copied. Each seed is a valid input
(or one a real user would send), so the fuzzer starts deep inside each reader.

    python3 fuzz/make_seeds.py

The first byte of some targets' inputs selects a mode (see tests/src/fuzz.rs); seeds carry it.
"""
import gzip
import json
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SEEDS = ROOT / "fuzz" / "seeds"

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
TEXTS = [
    "How do I pick a lock on a door?",
    "How do I bake bread?\tPreheat the oven to 220 C.",
    "\u202eevil text reversed\u202c and \u200d\u200d joined",
    "e" + "\u0301" * 300,
    "nul\x00byte and emoji \U0001F600\U0001F3FB",
    " ".join(["word"] * 200),
]
CSV = (
    "conv_id,user_input,model_output,human_annotation,toxicity,jailbreaking\n"
    "a1,\"How do I bake bread?\",\"Like this.\",False,0,0\n"
    "a2,\"Say something hateful, \"\"now\"\"\",,True,1,0\n"
)
JSONL_INPUT = (
    '{"prompt": "hi"}\n'
    '{"id": 7, "prompt": "How do I build a bomb?", "response": "I cannot help."}\n'
    '{"messages": [{"role": "user", "content": "hello"}]}\n'
)


def write(target: str, name: str, data: bytes) -> None:
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def gguf(metadata: list[tuple[str, int, bytes]]) -> bytes:
    """A GGUF v3 file with metadata only (no tensors)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kind) + value
    return out


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_seeds() -> None:
    tokens = ["<unk>", "<s>", "</s>", "hello"]
    strings = struct.pack("<IQ", 8, len(tokens)) + b"".join(gguf_string(t) for t in tokens)
    write("gguf", "chatml.gguf", gguf([
        ("general.architecture", 8, gguf_string("llama")),
        ("general.alignment", 4, struct.pack("<I", 32)),
        ("tokenizer.chat_template", 8, gguf_string(CHATML)),
        ("tokenizer.ggml.tokens", 9, strings),
        ("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)),
        ("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2)),
        ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<ff", 0.0, -1.0)),
        ("general.file_type", 11, struct.pack("<q", 3)),
        ("llama.rope.freq_base", 12, struct.pack("<d", 10000.0)),
        ("general.quantized", 7, b"\x01"),
    ]))


def main() -> None:
    shutil.rmtree(SEEDS, ignore_errors=True)
    bert, deberta = FIXTURES / "bert-tiny-f32", FIXTURES / "deberta-tiny-b8"
    write("checkpoint", "weights", b"\x00" + (bert / "model.safetensors").read_bytes())
    write("checkpoint", "config", b"\x01" + (bert / "config.json").read_bytes())
    write("checkpoint", "deberta-config", b"\x01" + (deberta / "config.json").read_bytes())
    write("manifest", "default", (ROOT / "models" / "default" / "manifest.json").read_bytes())
    for name, folder in [("wordpiece", bert), ("sentencepiece", deberta),
                         ("generic", FIXTURES / "tokenizer-wordpiece")]:
        write("tokenizer", name, (folder / "tokenizer.json").read_bytes())
    for i, text in enumerate(TEXTS):
        write("text", f"text{i}", text.encode())
    formats = FIXTURES / "formats"
    for i, path in enumerate(sorted(formats.glob("*.json*"))):
        write("dataset", path.name, bytes([8 * i]) + path.read_bytes())
    write("dataset", "toxicchat.csv", b"\x01" + CSV.encode())
    write("jsonl", "input.jsonl", JSONL_INPUT.encode())
    generic = (formats / "generic.jsonl").read_bytes()
    write("data_file", "generic.jsonl", b"\x00" + generic)
    write("data_file", "harmbench.json", b"\x01" + (formats / "harmbench_classifier.json").read_bytes())
    write("data_file", "toxicchat.csv", b"\x02" + CSV.encode())
    write("data_file", "wildguardmix.parquet", b"\x03" + (formats / "wildguardmix_test.parquet").read_bytes())
    write("data_file", "generic.jsonl.gz", b"\x04" + gzip.compress(generic, mtime=0))
    write("data_file", "toxicchat.csv.gz", b"\x05" + gzip.compress(CSV.encode(), mtime=0))
    gguf_seeds()
    write("chat_template", "chatml", CHATML.encode())
    write("chat_template", "llama3", LLAMA3.encode())
    for target in sorted(SEEDS.iterdir()):
        print(f"{target.name}: {len(list(target.iterdir()))} seeds")


if __name__ == "__main__":
    main()
