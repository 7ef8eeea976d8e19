"""Where the torch server's time goes at one client: the same one-utterance request measured at each layer
the server adds, from the bare `Predictor.predict` up to `mtl serve` over loopback, at 1 and 2 intra-op threads.

    direct         Predictor.predict([text]) on the calling thread (what "in process" measured)
    worker_thread  the same call on another thread (the server's model thread), the caller waiting on it
    batcher        through mtl.serving.batching.Batcher on an asyncio loop (queue, wake-up, thread hop)
    server         `mtl serve --threads N` in its own process, one keep-alive client over loopback (JSON,
                   HTTP, uvicorn, FastAPI, two processes on the cores)
The model: MiniLM-L6 under the joint intent + slot heads with ATIS's label sets, as exported for serving; its
heads are untrained (latency does not depend on the weights), so nothing is trained. p50 and p90 of
`--requests` requests over ATIS test utterances after a warm-up.

    python benchmarks/serving_latency.py --requests 300
"""
import argparse
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

import mtl
from common import DATA, RESULTS, load_average, minilm_dir, write_result
from mtl.serving.batching import Batcher
from mtl.serving.process import ServerProcess, serve_command
from serving import Connection

RUNS = RESULTS / "runs" / "serving_latency"


def model_folder() -> Path:
    """MiniLM-L6 + intent and slot heads over ATIS's labels, exported untrained (made once)."""
    out = RUNS / "model"
    if not (out / "model.json").is_file():
        reader = mtl.reader.IntentSlotReader(minilm_dir(), max_seqlen=48, seed=1)
        reader.load_data(DATA / "atis" / "train", batch_size=16)
        encoder = mtl.backbone.BERT.from_pretrained(minilm_dir())
        heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
        trainer = mtl.MultiHeadTrainer([mtl.Trainer("atis", reader=reader, head=heads)], backbone=encoder,
                                       num_epochs=1)
        trainer.export(out)
    return out


def percentiles(seconds: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * float(np.percentile(seconds, 50)), 2),
            "p90_ms": round(1000 * float(np.percentile(seconds, 90)), 2)}


def in_process(predictor, texts: list[str], requests: int) -> dict[str, dict[str, float]]:
    """direct, worker_thread and batcher taken in turn, request by request (the machine's load drifts: each
    layer sees the same moments)."""
    async def run() -> dict[str, list[float]]:
        batcher = Batcher(lambda batch, tasks: predictor.predict(batch), 32, 2.0, 1024)
        await batcher.start()
        took: dict[str, list[float]] = {"direct": [], "worker_thread": [], "batcher": []}
        with ThreadPoolExecutor(1) as pool:
            layers = {"direct": lambda t: _ready(predictor.predict([t])),
                      "worker_thread": lambda t: _ready(pool.submit(predictor.predict, [t]).result()),
                      "batcher": lambda t: batcher.submit([t])}
            for index in range(requests + 10):
                for layer, call in layers.items():
                    started = time.perf_counter()
                    await call(texts[index % len(texts)])
                    if index >= 10:
                        took[layer].append(time.perf_counter() - started)
        await batcher.stop()
        return took
    return {layer: percentiles(seconds) for layer, seconds in asyncio.run(run()).items()}


async def _ready(value: object) -> object:
    return value


def served(model: Path, threads: int, texts: list[str], requests: int, **env: str) -> dict[str, float]:
    server = ServerProcess(serve_command(model, "--threads", str(threads), "--runtime", "torch", "--precision",
                                         "fp32"), RUNS / f"serve-{threads}.log", env={**os.environ, **env})

    async def run() -> list[float]:
        connection = await Connection.open(server.url)
        took = []
        try:
            for index in range(requests + 10):
                started = time.perf_counter()
                await connection.post("/predict", {"texts": [texts[index % len(texts)]]})
                took.append(time.perf_counter() - started)
        finally:
            connection.close()
        return took[10:]
    try:
        return percentiles(asyncio.run(run()))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    texts = (DATA / "atis" / "test" / "seq.in").read_text(encoding="utf-8").splitlines()[:200]
    model = model_folder()
    predictor = mtl.load(model, precision="fp32")
    load_before, metrics = load_average(), {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for layer, figures in {**in_process(predictor, texts, args.requests),
                               "server": served(model, threads, texts, args.requests)}.items():
            metrics.update({f"threads{threads}.{layer}.{name}": value for name, value in figures.items()})
    for threads in args.threads:
        base = metrics[f"threads{threads}.direct.p50_ms"]
        for layer in ("worker_thread", "batcher", "server"):
            metrics[f"threads{threads}.{layer}.added_p50_ms"] = round(metrics[f"threads{threads}.{layer}.p50_ms"]
                                                                      - base, 2)
    path = write_result("serving_latency", {
        "model": "MiniLM-L6 + joint intent/slot heads (ATIS labels, untrained), fp32", "data": "ATIS test, 200",
        "requests": args.requests, "metrics": metrics,
        "load_average": {"before": load_before, "after": load_average()}})
    for name, value in metrics.items():
        print(f"{name:<40}{value:>9}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
