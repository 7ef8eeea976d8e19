"""Do mtl's fast defaults cost accuracy? ATIS joint training, defaults vs fp32 on torch's own kernels.

The defaults: bf16 autocast (on CPUs with fast bf16), the word-embedding gradient buffer (same numbers) and
fast dropout (masks from another random source). The reference: fp32, torch's embedding gradient and
dropout. Everything else is shared (MiniLM, batch 32, lr, epochs, seeds); each run keeps its best dev epoch
and is evaluated on test once. Writes benchmarks/results/precision_check.json.

    python benchmarks/precision_check.py --epochs 3 --seeds 1 2 3
"""
import argparse
import logging

import torch

from common import DATA, load_average, mean_std, write_result
from joint_intent_slot import train_one
from overhead import MODEL

SIDES = {"defaults": {}, "fp32_torch_kernels": {"precision": "fp32", "embedding_grad_buffer": False,
                                                "fast_dropout": False}}
KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seqlen", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.crf, args.precision = False, "auto"  # what train_one reads besides the above
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    runs = {side: [] for side in SIDES}
    for seed in args.seeds:
        for side, options in SIDES.items():
            runs[side].append(train_one(DATA / "atis", "joint", seed, args, **options))
    scores = {side: {k: [r["metrics"][k] for r in rs] for k in KEYS} for side, rs in runs.items()}
    summary = {side: {k: mean_std(v) for k, v in by_key.items()} for side, by_key in scores.items()}
    seconds = {side: sum(r["seconds"] for r in rs) for side, rs in runs.items()}
    print(f"{'metric (test)':<18}" + "".join(f"{side:>26}" for side in SIDES) + f"{'difference':>12}")
    for k in KEYS:
        cells = "".join(f"{summary[s][k][0]:>19.2f} ± {summary[s][k][1]:<4.2f}" for s in SIDES)
        print(f"{k:<18}{cells}{summary['defaults'][k][0] - summary['fp32_torch_kernels'][k][0]:>+12.2f}")
    speedup = seconds["fp32_torch_kernels"] / seconds["defaults"]
    print(f"training time: defaults {seconds['defaults']:.0f}s, fp32 {seconds['fp32_torch_kernels']:.0f}s "
          f"({speedup:.2f}x)")
    path = write_result("precision_check", {
        "model": MODEL, "data": "atis: train, best dev epoch, test once; joint intent + slots",
        "settings": {**vars(args), "sides": SIDES},
        "metrics": {k: summary["defaults"][k][0] for k in KEYS},
        "std": {k: summary["defaults"][k][1] for k in KEYS}, "seeds": args.seeds,
        "baseline": {"name": "fp32 on torch's own embedding gradient and dropout",
                     "metrics": {k: summary["fp32_torch_kernels"][k][0] for k in KEYS},
                     "std": {k: summary["fp32_torch_kernels"][k][1] for k in KEYS}},
        "difference": {k: summary["defaults"][k][0] - summary["fp32_torch_kernels"][k][0] for k in KEYS},
        "per_seed": scores, "training_seconds": seconds, "ratio": {"training_time_fp32_over_defaults": speedup},
        "load_average": load_average()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
