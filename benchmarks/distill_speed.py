"""Serving speed of the distillation benchmark's models, and the picture of accuracy against throughput.

Utterances per second at batch 1 and 32, PyTorch (at `--precision`) and onnxruntime (fp32 `mtl export --onnx`),
every figure measured in this one process, one model after the other, on the ATIS test utterances, with
`--threads` intra-op threads. A model's speed depends on its network, not its weights, so one figure stands
for every model of the same network (seed 1's folder is timed):
  teacher     the MPNet-base teacher (12 layers, hidden 768)
  student     MiniLM-L6 (6 layers, hidden 384): the student, and the same network trained directly
  l3_student  the 3-layer student (MiniLM's layers 0, 2, 4), and the 3-layer model trained directly
Run benchmarks/distill.py (both parts) first: it leaves the model folders. ONNX exports are kept in
results/runs/distill_<data>/onnx/. Writes results/distill_speed.json (`metrics.speed.<model>.<runtime>_b<batch>`,
`ratio.speed.<a>_over_<b>.<runtime>_b<batch>`), then draws docs/images/distill_<data>.png from it and
results/distill_intent_slot.json: test sentence accuracy (mean ± std over seeds) against ONNX utterances/s
at batch 32.

    python benchmarks/distill_speed.py --data atis --threads 2
"""
import argparse
import json
import logging
from pathlib import Path

import torch

import mtl
from common import RESULTS, load_average, write_result
from distill import teacher_folder
from serving import atis_test, utterances_per_second
from mtl.serving.onnx_export import export_onnx
from mtl.serving.onnx_runtime import load_onnx
from mtl.model.device import resolve_precision

NETWORK_OF = {"teacher": "teacher", "student": "student", "direct": "student", "direct6": "student",
              "l3_student": "l3_student", "l3_direct": "l3_student"}  # which timed network each model runs
IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def folders(data: str) -> dict[str, Path]:
    """Seed 1's model folder of each timed network (benchmarks/distill.py's runs and base_encoder.py's)."""
    runs = RESULTS / "runs" / f"distill_{data}"
    chosen = json.loads((RESULTS / "distill_intent_slot.json").read_text(encoding="utf-8"))["details"][data]
    found = {"teacher": RESULTS / teacher_folder(data, 1), "student": runs / "models" / "direct6-seed1",
             "l3_student": runs / "models" / f"l3-student-lr{chosen['l3_student']['lr']:g}-seed1"}
    missing = [str(path) for path in found.values() if not (path / "model.json").is_file()]
    if missing:
        raise SystemExit(f"no model folder at {missing}: run benchmarks/distill.py --data {data} first")
    return found


def onnx_of(folder: Path, data: str) -> Path:
    out = RESULTS / "runs" / f"distill_{data}" / "onnx" / folder.name
    if not (out / "onnx.json").is_file():
        export_onnx(folder, out)
    return out


def measure(name: str, folder: Path, texts: list[str], args: argparse.Namespace) -> dict[str, float]:
    predictors = {"torch": mtl.load(folder, precision=args.precision),
                  "onnx": load_onnx(onnx_of(folder, args.data), threads=args.threads)}
    speed = {}
    for runtime, predictor in predictors.items():
        for batch in (1, 32):
            speed[f"{runtime}_b{batch}"] = round(utterances_per_second(predictor, texts, batch, args.seconds), 1)
    print(f"{name:<12}" + "  ".join(f"{k} {v:8.1f}" for k, v in speed.items()), flush=True)
    return speed


def draw(data: str, speed: dict) -> Path:
    """Sentence accuracy (mean ± std over seeds) against ONNX utterances/s at batch 32, one point per model."""
    from matplotlib import pyplot
    accuracy = json.loads((RESULTS / "distill_intent_slot.json").read_text(encoding="utf-8"))["details"][data]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    for model, details in accuracy.items():
        speed_of = speed[NETWORK_OF[model]]["onnx_b32"]
        mean, std = details["metrics"]["frame_accuracy"], details["std"]["frame_accuracy"]
        axes.errorbar(speed_of, mean, yerr=std, fmt="o", capsize=3)
        axes.annotate(model, (speed_of, mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("ONNX utterances/s, batch 32 (log scale)")
    axes.set_ylabel(f"{data.upper()} test sentence accuracy")
    axes.set_title(f"{data.upper()}: accuracy against serving throughput")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"distill_{data}.png"
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("atis",), default="atis")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    texts = atis_test()[0]
    load_before = load_average()
    speed = {name: measure(name, folder, texts, args) for name, folder in folders(args.data).items()}
    ratio = {f"{a}_over_{b}": {k: round(speed[a][k] / speed[b][k], 3) for k in speed[a]}
             for a, b in (("student", "teacher"), ("l3_student", "student"))}
    path = write_result("distill_speed", {
        "data": f"{args.data} test utterances ({len(texts)}), cycled", "networks": NETWORK_OF,
        "folders": {name: str(folder.relative_to(RESULTS)) for name, folder in folders(args.data).items()},
        "settings": {"threads": args.threads, "precision": resolve_precision(args.precision, torch.device("cpu")),
                     "onnx": "fp32", "seconds_per_figure": args.seconds},
        "load_average": {"before": load_before, "after": load_average()},
        "metrics": {"speed": speed}, "ratio": {"speed": ratio}})
    print(f"wrote {path.name}; drew {draw(args.data, speed)}")

if __name__ == "__main__":
    main()
