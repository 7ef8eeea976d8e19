"""The cost and serving parts of benchmarks/adapters.py (run it, not this file; this file's own entry point is
the child process that measures one method's peak memory).

Cost, on ATIS joint intent + slots, batch 32, MiniLM-L6: trainable parameters, the size of what a task adds to
a deployment, training steps per second (rounds alternating full fine-tuning and LoRA in one process), and the
peak resident memory of a fresh process that trains `steps` steps by one method.
Serving: `mtl serve` processes on loopback, one thread each, measured one after the other: resident memory
after a warm-up, and per-task throughput (one utterance per request, `concurrency` clients). Each task's "full
model" is its LoRA folder with the adapter folded into the encoder's weights (mtl.serving.merge): an ordinary
folder of a whole encoder and the task's heads, the size and speed of a fully fine-tuned one.
"""
import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mtl
from common import load_average, minilm_dir
from overhead import atis_reader
from serving import Connection, atis_test
from soak_serving import rss_mib
from mtl.serving.merge import merge_adapter
from mtl.serving.process import ServerProcess, serve_command


def trainer_for(method: str, lora: dict, seed: int = 1) -> "mtl.MultiHeadTrainer":
    """ATIS joint over MiniLM, batch 32: fully fine-tuned (lr 1e-4) or with a LoRA adapter (lr 1e-3)."""
    reader = atis_reader(seed, 32, max_seqlen=64)
    torch.manual_seed(seed)
    encoder = mtl.backbone.BERT.from_pretrained(minilm_dir())
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
    adapter = mtl.backbone.LoRA(**lora) if method == "lora" else None
    task = mtl.Trainer("atis", reader=reader, head=heads, adapter=adapter)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=1e-3 if adapter else 1e-4, num_epochs=10, seed=seed)
    trainer.build_forward()
    return trainer


def parameters(trainer: "mtl.MultiHeadTrainer") -> dict[str, int | float]:
    """The encoder's own parameters, and what trains: in the encoder (LoRA's matrices, or all of it) and heads."""
    model = trainer.model
    count = {"encoder_total": sum(p.numel() for n, p in model.backbone.named_parameters() if ".lora_" not in n),
             "encoder_trainable": sum(p.numel() for p in model.backbone.parameters() if p.requires_grad),
             "heads_trainable": sum(p.numel() for p in model.heads.parameters() if p.requires_grad)}
    count["encoder_trainable_percent"] = round(100 * count["encoder_trainable"] / count["encoder_total"], 3)
    return count


def folder_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2 ** 20, 3)


def cost_part(args: argparse.Namespace, lora: dict) -> dict:
    trainers = {method: trainer_for(method, lora) for method in ("full", "lora")}
    out = {method: {**parameters(t), "precision": t.precision} for method, t in trainers.items()}
    with tempfile.TemporaryDirectory() as work:
        out["full"]["task_folder_mb"] = folder_mb(trainers["full"].export(Path(work) / "full"))
        small = trainers["lora"].export(Path(work) / "lora", base=False)
        out["lora"]["task_folder_mb"] = folder_mb(small)
        out["lora"]["adapter_weights_mb"] = folder_mb(small / "adapters")
        out["lora"]["heads_mb"] = round((small / "heads.safetensors").stat().st_size / 2 ** 20, 3)
    rates: dict[str, list[float]] = {"full": [], "lora": []}
    for round_ in range(args.rounds + 1):
        for method, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train(print_steps=0, max_steps=trainer.global_step + args.steps)
            if round_:
                rates[method].append(args.steps / (time.perf_counter() - started))
    for method in trainers:
        out[method]["steps_per_s"] = round(statistics.median(rates[method]), 3)
        out[method].update(child_peak(method, lora, args.steps * 2))
    ratio = statistics.median(b / a for a, b in zip(rates["full"], rates["lora"]))
    return {"metrics": {"full": out["full"], "lora": out["lora"],
                        "lora_over_full_steps_per_s": round(ratio, 3)},
            "rates": rates, "settings": {"steps": args.steps, "rounds": args.rounds, "threads": args.threads,
                                         "data": "ATIS joint, batch 32, max_seqlen 64"},
            "load_average": load_average()}


def child_peak(method: str, lora: dict, steps: int) -> dict[str, float]:
    """Peak resident memory (MiB) of a fresh process while it trains `steps` steps, and after."""
    done = subprocess.run([sys.executable, __file__, method, json.dumps(lora), str(steps)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def texts_for(task: str, texts: list[str]) -> list[str]:
    return [f"{a}\t{b}" for a, b in zip(texts, texts[1:])] if task == "mrpc" else texts


async def task_load(url: str, task: str, texts: list[str], concurrency: int, requests: int) -> float:
    """Utterances per second for `task`: `requests` one-text POSTs by `concurrency` keep-alive clients."""
    connections = [await Connection.open(url) for _ in range(concurrency)]

    async def client(connection: Connection, numbers: itertools.count, total: int) -> None:
        while (index := next(numbers)) < total:
            await connection.post("/predict", {"texts": [texts[index % len(texts)]], "tasks": [task]})
    try:
        await asyncio.gather(*(client(c, itertools.count(), 2) for c in connections))  # warm-up
        numbers, started = itertools.count(), time.perf_counter()
        await asyncio.gather(*(client(c, numbers, requests) for c in connections))
        return round(requests / (time.perf_counter() - started), 1)
    finally:
        for connection in connections:
            connection.close()


def serve(folders: list[Path], log: Path) -> ServerProcess:
    extra = [arg for folder in folders[1:] for arg in ("--model", str(folder))]
    return ServerProcess(serve_command(folders[0], *extra, "--threads", "1"), log)


def task_names(folder: Path) -> list[str]:
    return [task["name"] for task in json.loads((folder / "model.json").read_text(encoding="utf-8"))["tasks"]]


def serving_part(args: argparse.Namespace, lora: list[Path]) -> dict:
    """`lora`: each task's LoRA folder (holding the base)."""
    texts = atis_test()[0]
    one, per_task = {}, {}
    with tempfile.TemporaryDirectory() as logs:
        full = [merge_adapter(folder, task_names(folder)[0], Path(logs) / f"{folder.name}-merged") for folder in lora]
        for folder in lora:
            server = serve([folder], Path(logs) / f"{folder.name}.log")
            task = task_names(folder)[0]
            one[task] = asyncio.run(task_load(server.url, task, texts_for(task, texts), args.concurrency,
                                              args.requests))
            one_rss = rss_mib(server.process.pid)
            server.stop()
        server = serve(lora, Path(logs) / "five.log")
        for folder in lora:
            task = task_names(folder)[0]
            per_task[task] = asyncio.run(task_load(server.url, task, texts_for(task, texts), args.concurrency,
                                                   args.requests))
        five_rss = rss_mib(server.process.pid)
        server.stop()
        full_rss = []
        for folder in full:
            server = serve([folder], Path(logs) / f"{folder.name}.log")
            task = task_names(folder)[0]
            asyncio.run(task_load(server.url, task, texts_for(task, texts), args.concurrency, args.concurrency * 4))
            full_rss.append(rss_mib(server.process.pid))
            server.stop()
    ratio = {task: round(per_task[task] / one[task], 3) for task in one}
    return {"metrics": {"five_tasks": {"rss_mib": round(five_rss, 1), "utt_per_s": per_task},
                        "one_task": {"rss_mib": round(one_rss, 1), "utt_per_s": one},
                        "five_full_models": {"rss_mib": round(sum(full_rss), 1),
                                             "per_model_rss_mib": [round(r, 1) for r in full_rss]},
                        "five_over_one_rss": round(five_rss / one_rss, 3),
                        "five_full_over_one_rss": round(sum(full_rss) / one_rss, 3),
                        "throughput_five_over_one": ratio},
            "settings": {"concurrency": args.concurrency, "requests": args.requests, "server_threads": 1,
                         "one_task_rss_of": lora[-1].name, "folders": [f.name for f in lora],
                         "full_models": "each LoRA folder with its adapter folded into the weights"},
            "load_average": load_average()}


def child(method: str, lora: dict, steps: int) -> None:
    """Peak resident memory while training (VmHWM, reset once the model is built: loading the weights has a
    transient peak of its own that would hide the training's gradients and Adam state), and after."""
    torch.set_num_threads(2)
    trainer = trainer_for(method, lora)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident size
    trainer.train(print_steps=0, max_steps=steps)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    print(json.dumps({"peak_rss_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
                      "rss_after_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1)}))


if __name__ == "__main__":
    child(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
