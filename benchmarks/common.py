"""Shared by benchmark scripts: machine facts, mean/std, and writing results/<name>.json."""
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"cores": os.cpu_count(), "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available()
            else "cpu: " + (platform.processor() or platform.machine()), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def command() -> str:
    """The exact command line, runnable from the repository root."""
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"name": name, "command": command(), "date": datetime.date.today().isoformat(), "machine": machine()}
    body.update(payload)
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return path
