#!/usr/bin/env python3
"""A local Hugging Face Hub for harmaug's tests: serves model folders in the Hub's URL layout.

    hub_server.py --repo OWNER/NAME=DIR [--repo …] [--gated OWNER/NAME] [--token T]
                  [--shard OWNER/NAME=DIR] [--interrupt FILE] [--log PATH]

Answers as huggingface.co does (what huggingface_hub and harmaug read):
- `HEAD|GET /OWNER/NAME/resolve/REVISION/FILE` with `X-Repo-Commit` (one commit per repository;
  `main` or that commit resolve), `ETag` = the git blob SHA-1 for small files; large (LFS) files
  (`*.safetensors`, `*.gguf`) answer 302 to `/cdn/SHA256` with `X-Linked-Etag` = their SHA-256
  and `X-Linked-Size`.
- 404 with `X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`; a gated repository
  wants `Authorization: Bearer T` (401 without a token, 403 with a wrong one, `GatedRepo`).
- `/cdn/SHA256` honours `Range: bytes=N-` (206). `--interrupt FILE`: the first full GET of that
  file's bytes sends half of them and drops the connection.
- `--shard OWNER/NAME=DIR`: DIR's `model.safetensors` split into two shards plus
  `model.safetensors.index.json`, as transformers saves large checkpoints.
Prints `listening on PORT` once ready; `--log` gets one line per request: METHOD PATH RANGE AUTH.
"""
import argparse
import hashlib
import http.server
import json
import os
import struct
import sys

LFS_SUFFIXES = (".safetensors", ".gguf")


def split_safetensors(data):
    """Two shards of a safetensors file and the index naming them (tensors in header order)."""
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    metadata = header.pop("__metadata__", None)
    names = sorted(header, key=lambda n: header[n]["data_offsets"][0])
    half = len(names) // 2
    shards, weight_map = {}, {}
    for i, group in enumerate([names[:half], names[half:]]):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        new_header, chunks, offset = {}, [], 0
        for name in group:
            start, end = header[name]["data_offsets"]
            new_header[name] = dict(header[name], data_offsets=[offset, offset + end - start])
            chunks.append(body[start:end])
            offset += end - start
            weight_map[name] = file
        if metadata:
            new_header["__metadata__"] = metadata
        encoded = json.dumps(new_header).encode()
        encoded += b" " * (-len(encoded) % 8)
        shards[file] = struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)
    index = {"metadata": {"total_size": len(body)}, "weight_map": weight_map}
    shards["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return shards


def load_repo(folder, shard):
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    if shard:
        files.update(split_safetensors(files.pop("model.safetensors")))
    return files


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", action="append", default=[])
    parser.add_argument("--shard", action="append", default=[])
    parser.add_argument("--gated", action="append", default=[])
    parser.add_argument("--token", default="hf_test_token")
    parser.add_argument("--interrupt", action="append", default=[])
    parser.add_argument("--log")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    repos = {}
    for spec, shard in [(s, False) for s in args.repo] + [(s, True) for s in args.shard]:
        name, folder = spec.split("=", 1)
        repos[name] = {
            "files": load_repo(folder, shard),
            "commit": hashlib.sha1(name.encode()).hexdigest(),
        }
    blobs = {}
    for repo in repos.values():
        for data in repo["files"].values():
            blobs[hashlib.sha256(data).hexdigest()] = data
    interrupt = set(args.interrupt)
    log = open(args.log, "a", buffering=1) if args.log else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status, headers=(), body=b"", send_body=True):
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            if not any(k.lower() == "content-length" for k, _ in headers):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body and self.command != "HEAD":
                self.wfile.write(body)

        def refuse(self, status, code):
            self.answer(status, [("X-Error-Code", code)], code.encode())

        def do_HEAD(self):
            self.route(send_body=False)

        def do_GET(self):
            self.route(send_body=True)

        def route(self, send_body):
            if log:
                log.write(
                    f"{self.command} {self.path} {self.headers.get('Range', '-')} "
                    f"{self.headers.get('Authorization', '-')}\n"
                )
            parts = self.path.lstrip("/").split("/")
            if parts[0] == "cdn" and len(parts) == 2:
                return self.cdn(parts[1], send_body)
            if len(parts) < 5 or parts[2] != "resolve":
                return self.refuse(404, "RepoNotFound")
            name, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = repos.get(name)
            if repo is None:
                return self.refuse(401 if "Authorization" not in self.headers else 404, "RepoNotFound")
            if name in args.gated:
                sent = self.headers.get("Authorization")
                if sent != f"Bearer {args.token}":
                    return self.refuse(401 if sent is None else 403, "GatedRepo")
            if revision not in ("main", repo["commit"]):
                return self.refuse(404, "RevisionNotFound")
            data = repo["files"].get(file)
            if data is None:
                return self.refuse(404, "EntryNotFound")
            common = [("X-Repo-Commit", repo["commit"])]
            if file.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                host = self.headers.get("Host")
                return self.answer(
                    302,
                    common
                    + [
                        ("X-Linked-Etag", f'"{sha256}"'),
                        ("X-Linked-Size", str(len(data))),
                        ("ETag", '"not-the-content-hash"'),
                        ("Location", f"http://{host}/cdn/{sha256}"),
                    ],
                )
            git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            headers = common + [("ETag", f'"{git_sha1}"'), ("Content-Length", str(len(data)))]
            self.answer(200, headers, data, send_body)

        def cdn(self, sha256, send_body):
            data = blobs.get(sha256)
            if data is None:
                return self.answer(404)
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and ranged.endswith("-"):
                start = int(ranged[6:-1])
            part = data[start:]
            status = 206 if start else 200
            headers = [("Content-Length", str(len(part)))]
            if start:
                headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
            if send_body and not start and sha256 in interrupt_blobs:
                interrupt_blobs.discard(sha256)
                self.send_response(200)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.answer(status, headers, part, send_body)

    interrupt_blobs = {
        hashlib.sha256(data).hexdigest()
        for repo in repos.values()
        for file, data in repo["files"].items()
        if file in interrupt
    }
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that hang up
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
