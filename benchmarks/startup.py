"""Start-up: what a user waits for before mtl does anything, each in a fresh interpreter.

    help.seconds                   `mtl --help`
    predict_10.<runtime>.seconds   `mtl predict` on 10 utterances, torch model folder and its ONNX export
    serve_ready.<runtime>.seconds  `mtl serve` until /ready answers 200; serve.<runtime>.rss_mib its resident
                                   memory then
    floor.torch_transformers.seconds  a bare `import torch` plus `from transformers import PreTrainedModel`
Each figure is the median of `--repeats` runs. The model: the quick start's joint intent + slot model over
MiniLM-L6 (one epoch; made once and kept in results/runs/startup/ with its ONNX export). `--baseline DIR`
measures the mtl of another checkout too (a `git worktree` of the commit before a change), on the same
folders and in the same run, the two interleaved repeat by repeat (this machine is shared and noisy): its
figures go under `baseline`, and `ratio` is this checkout's over the baseline's.

    git worktree add ../mtl-before <commit> && python benchmarks/startup.py --baseline ../mtl-before
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, load_average, write_result
from mtl.serving.process import ServerProcess, serve_command

RUNS = RESULTS / "runs" / "startup"
ROOT = Path(__file__).resolve().parent.parent
UTTERANCES = ["book a flight from boston to denver tomorrow", "play some jazz", "what is the weather in paris",
              "set an alarm for seven am", "find a table for four tonight", "wake me up at six",
              "play yesterday by the beatles", "show me flights to tokyo", "will it rain in london",
              "book a table at an italian place"]


def environment(source: Path) -> dict[str, str]:
    """This environment with `source`'s mtl first on the import path (it wins over the editable install)."""
    return {**os.environ, "PYTHONPATH": str(source.resolve()), "HF_HUB_OFFLINE": "1"}


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def serve_ready(model: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from launch to /ready = 200, and the server's RSS then."""
    started = time.perf_counter()
    server = ServerProcess(serve_command(model, "--threads", "1"), RUNS / "serve.log", env=env)
    seconds = time.perf_counter() - started
    status = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    server.stop()
    return seconds, rss


def prepare_models() -> tuple[Path, Path]:
    """The quick start's model after one epoch, and its ONNX export (made once)."""
    model, onnx = RUNS / "quickstart" / "model", RUNS / "quickstart-onnx"
    if not (model / "model.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart" / "quickstart.py"), "--epochs", "1",
                        "--output", str(RUNS / "quickstart")], check=True)
    if not (onnx / "onnx.json").is_file():
        subprocess.run([sys.executable, "-m", "mtl", "export", str(model), "--onnx", str(onnx)], check=True)
    return model, onnx


def measure(source: Path, model: Path, onnx: Path, runs: dict[str, list[float]]) -> None:
    """One repeat of every figure for `source`'s mtl, appended to `runs`."""
    env, python = environment(source), sys.executable
    where = subprocess.run([python, "-c", "import mtl; print(mtl.__file__)"], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(source.resolve()), f"measuring {where}, not {source}"
    inputs = RUNS / "utterances.txt"
    inputs.write_text("\n".join(UTTERANCES) + "\n", encoding="utf-8")

    def add(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)
    add("floor.torch_transformers.seconds",
        timed([python, "-c", "import torch; from transformers import PreTrainedModel"], env))
    add("help.seconds", timed([python, "-m", "mtl", "--help"], env))
    for runtime, folder in (("torch", model), ("onnx", onnx)):
        add(f"predict_10.{runtime}.seconds", timed([python, "-m", "mtl", "predict", "--model", str(folder), "--input",
                                                     str(inputs), "--output", str(RUNS / "predictions.jsonl")], env))
        seconds, rss = serve_ready(folder, env)
        add(f"serve_ready.{runtime}.seconds", seconds)
        add(f"serve.{runtime}.rss_mib", rss)


def revision(source: Path) -> str:
    return subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout, measured in the same run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    model, onnx = prepare_models()
    baseline, here = (args.baseline.resolve() if args.baseline else None), Path.cwd()
    os.chdir(RUNS)  # `python -m mtl` and `-c` put the working folder first on sys.path: not a checkout's
    sources = {"metrics": ROOT, **({"baseline": baseline} if baseline else {})}
    runs: dict[str, dict[str, list[float]]] = {key: {} for key in sources}
    load_before = load_average()
    for _ in range(args.repeats):
        for key, source in sources.items():
            measure(source, model, onnx, runs[key])
    os.chdir(here)  # the command is recorded as it was typed
    figures = {key: {name: round(statistics.median(values), 3) for name, values in found.items()}
               for key, found in runs.items()}
    if args.baseline:
        figures["ratio"] = {k: round(v / figures["baseline"][k], 3) for k, v in figures["metrics"].items()}
    path = write_result("startup", {
        "model": "the quick start's MiniLM-L6 joint intent + slot model (1 epoch)", "repeats": args.repeats,
        "data": "10 utterances (UTTERANCES above) for predict_10; the warm-up text for serve_ready",
        "revisions": {key: revision(source) for key, source in sources.items()}, **figures,
        "load_average": {"before": load_before, "after": load_average()}})
    for name, value in figures["metrics"].items():
        before = figures.get("baseline", {}).get(name)
        print(f"{name:<34}{value:>9}" + (f"{before:>9}  x{figures['ratio'][name]}" if before else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
