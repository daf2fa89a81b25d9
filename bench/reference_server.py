#!/usr/bin/env python3
"""The moderation server a Python user would write: FastAPI + transformers, with its own
dynamic batching (an asyncio queue; a batch waits up to --max-wait-ms for up to --max-batch
inputs, sorted by length, run in a thread so the event loop keeps accepting). The reference
side of bench/serve_load.py; same request and response shape as `harmaug serve`.

    pip install fastapi uvicorn torch transformers
    python3 bench/reference_server.py --model DIR --port 8181
"""
import argparse
import asyncio
import time

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class Request(BaseModel):
    input: str | list[str]
    model: str | None = None


def build_app(model_dir, max_length, max_batch, max_wait):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    queue: asyncio.Queue = asyncio.Queue()
    app = FastAPI()

    def score(texts):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batch = tokenizer([texts[i] for i in order], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt")
        with torch.inference_mode():
            probs = model(**batch).logits.softmax(-1)[:, 1].tolist()
        scores = [0.0] * len(texts)
        for i, p in zip(order, probs):
            scores[i] = p
        return scores

    async def batcher():
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await queue.get()]
            size = len(jobs[0][0])
            deadline = loop.time() + max_wait
            while size < max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job[0])
            texts = [t for job in jobs for t in job[0]]
            scores = await loop.run_in_executor(None, score, texts)
            offset = 0
            for texts_of_job, future in jobs:
                future.set_result(scores[offset:offset + len(texts_of_job)])
                offset += len(texts_of_job)

    @app.on_event("startup")
    async def start():
        asyncio.create_task(batcher())

    @app.post("/v1/moderations")
    async def moderations(request: Request):
        texts = [request.input] if isinstance(request.input, str) else request.input
        future = asyncio.get_running_loop().create_future()
        await queue.put((texts, future))
        scores = await future
        return {
            "id": f"modr-{time.time_ns()}",
            "model": request.model or "reference",
            "results": [{"flagged": s >= 0.5, "categories": {"harmful": s >= 0.5},
                         "category_scores": {"harmful": s}} for s in scores],
        }

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    args = parser.parse_args()
    app = build_app(args.model, args.max_length, args.max_batch, args.max_wait_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
