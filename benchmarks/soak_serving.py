"""Serving under stress: `mtl serve` held under a bounded load for `--minutes` at `--clients` concurrent
clients on loopback, mixing well-behaved requests with clients that misbehave, on the ATIS joint model that
benchmarks/serving.py serves (or `--model DIR`).

Each client loops until the time is up, drawing its next behaviour from a fixed cycle:
  normal      one ATIS test utterance, keep-alive connection          -> 200 with one record for that text
  slow        the same request sent in pieces 0.1 s apart (a slow link) -> 200
  oversized   a 3 MiB body, far over what the text limits allow        -> 413
  malformed   a body that is not JSON                                  -> 400
  wrong       JSON with an unknown field                               -> 422
  disconnect  the request cut off mid-body, or sent whole and the connection closed before the answer
              (no answer expected; the server must go on)
`requests.sent` counts the requests that expect an answer; `requests.answered` those answered with the
expected status (and, for 200, a record for the text sent); `requests.lost` those with no answer at all
(timeout, reset); `requests.wrong` those answered with another status. The server's resident memory (VmRSS of
its process) is sampled every 5 s; `rss.drift_percent` is the largest sample after the warm-up against the
first sample after it. At the end the server must still be ready and shut down gracefully.

    python benchmarks/soak_serving.py --minutes 10 --clients 32
"""
import argparse
import asyncio
import itertools
import json
import os
import random
import time
from pathlib import Path

import httpx

from common import load_average, write_result
from mtl.serving.process import ServerProcess, serve_command
from serving import RUNS, atis_test, prepare_models

CYCLE = ("normal",) * 12 + ("slow", "oversized", "malformed", "wrong", "disconnect")
EXPECTED = {"normal": 200, "slow": 200, "oversized": 413, "malformed": 400, "wrong": 422}
TIMEOUT_S = 60.0
OVERSIZED_CHARS = 3 << 20  # a 3 MiB body: over the default limits' 1.6 MB


class Counts:
    def __init__(self) -> None:
        self.sent = self.answered = self.lost = self.wrong = self.disconnects = 0
        self.by_kind: dict[str, int] = {}
        self.wrong_examples: list[str] = []
        self.latencies_ms: list[float] = []


def request_bytes(kind: str, text: str, port: int) -> bytes:
    """The whole HTTP/1.1 request a behaviour sends (keep-alive, Content-Length framing)."""
    payload = {"normal": {"texts": [text]}, "slow": {"texts": [text]}, "wrong": {"texts": [text], "colour": 1},
               "oversized": {"texts": ["x" * OVERSIZED_CHARS]}, "disconnect": {"texts": [text]}}
    body = b'{"texts": [' if kind == "malformed" else json.dumps(payload[kind]).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if ": " in line)}
    return int(head[0].split()[1]), await reader.readexactly(int(headers.get("content-length", "0")))


async def client(port: int, texts: list[str], deadline: float, counts: Counts, seed: int) -> None:
    """One client: a keep-alive connection, reopened after every behaviour that ends it."""
    rng, kinds = random.Random(seed), itertools.cycle(CYCLE[seed % len(CYCLE):] + CYCLE[:seed % len(CYCLE)])
    connection = None
    while time.monotonic() < deadline:
        kind, text = next(kinds), rng.choice(texts)
        counts.by_kind[kind] = counts.by_kind.get(kind, 0) + 1
        if connection is None:
            connection = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = connection
        data = request_bytes(kind, text, port)
        if kind == "disconnect":
            writer.write(data if rng.random() < 0.5 else data[:len(data) - 7])
            await writer.drain()
            writer.close()
            counts.disconnects, connection = counts.disconnects + 1, None
            continue
        counts.sent += 1
        started = time.perf_counter()
        try:
            if kind == "slow":
                for start in range(0, len(data), 1 + len(data) // 5):
                    writer.write(data[start:start + 1 + len(data) // 5])
                    await writer.drain()
                    await asyncio.sleep(0.1)
            else:
                writer.write(data)
            status, body = await asyncio.wait_for(read_answer(reader), TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as error:
            counts.lost += 1
            counts.wrong_examples.append(f"{kind}: no answer ({type(error).__name__})")
            writer.close()
            connection = None
            continue
        if status == EXPECTED[kind] and (status != 200 or json.loads(body)["predictions"][0]["text"] == text):
            counts.answered += 1
            if kind == "normal":
                counts.latencies_ms.append(1000 * (time.perf_counter() - started))
        else:
            counts.wrong += 1
            counts.wrong_examples.append(f"{kind}: {status} {body[:120]!r}")
        if status >= 400 and status != 422:  # the server may close after an error it could not frame
            writer.close()
            connection = None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(port: int, pid: int, texts: list[str], args: argparse.Namespace) -> tuple[Counts, list]:
    counts, samples, started = Counts(), [], time.monotonic()
    deadline = started + 60 * args.minutes

    async def sample() -> None:
        while time.monotonic() < deadline:
            samples.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))
            await asyncio.sleep(5)
    await asyncio.gather(sample(), *(client(port, texts, deadline, counts, seed) for seed in range(args.clients)))
    return counts, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="an exported mtl model folder (default: serving.py's ATIS joint model)")
    parser.add_argument("--name", default="soak_serving", help="the results file's name (results/NAME.json)")
    parser.add_argument("--pad-to-multiple-of", type=int, default=16, help="the server's option (1: widths as they "
                        "come; results/soak_serving_unrounded.json ran before the option existed, so without it)")
    args = parser.parse_args()
    model = Path(args.model) if args.model else prepare_models(argparse.Namespace(model=None))[0]
    texts = atis_test()[0]
    load_before = load_average()
    server = ServerProcess(serve_command(model, "--threads", str(args.threads), "--pad-to-multiple-of",
                                         str(args.pad_to_multiple_of)), RUNS / "soak_serving.log")
    port = int(server.url.rsplit(":", 1)[1])
    try:
        counts, samples = asyncio.run(soak(port, server.process.pid, texts, args))
        still_ready = httpx.get(f"{server.url}/ready", timeout=30).status_code == 200
    finally:
        graceful = server.stop()
    after = [rss for at, rss in samples if at >= 60 * args.warmup_minutes]
    drift = 100 * (max(after) - after[0]) / after[0] if after else float("nan")
    latencies = sorted(counts.latencies_ms)
    metrics = {"requests.sent": counts.sent, "requests.answered": counts.answered, "requests.lost": counts.lost,
               "requests.wrong_status": counts.wrong, "disconnects": counts.disconnects,
               "rss.after_warmup_mib": after[0] if after else None, "rss.max_after_warmup_mib": max(after, default=None),
               "rss.drift_percent": round(drift, 2), "normal.p50_ms": round(latencies[len(latencies) // 2], 1),
               "normal.p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
               "still_ready": still_ready, "graceful_shutdown": graceful}
    path = write_result(args.name, {
        "model": str(model.name), "settings": vars(args), "behaviours": counts.by_kind, "metrics": metrics,
        "rss_samples": samples, "problems": counts.wrong_examples[:20], "load_average_before": load_before,
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "note": "the clients share the machine's cores with the server"})
    for key, value in metrics.items():
        print(f"{key:<26}{value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
