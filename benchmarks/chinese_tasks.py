"""Chinese tasks over the encoder pretrained here (benchmarks/pretrain_zh.py) against the same architecture from
random initialisation, with the same fine-tuning budget: ChnSentiCorp (accuracy), MSRA NER (character-level
entity F1), LCQMC (accuracy), each alone and the three as one multi-task model (examples/chinese/tasks.yaml).

Every task gets 3 epochs of its training data, alone or in the multi-task run (whose mix ratios in tasks.yaml
size the smaller tasks against MSRA), so the multi-task run costs what the three single-task runs cost together.
Every run selects on dev after each epoch of its reference task and scores test once. One learning rate
serves every run: among `--lrs`, the one whose pretrained single-task runs (first seed) reach the best mean
dev score over the three tasks. Each finished run is kept (results/runs/chinese_tasks/<init>-<tasks>-lr<lr>-
seed<N>.json; `--resume` skips it); results/chinese_tasks.json holds the lr search, per-seed figures,
pretrained minus random per task, and multi-task minus single-task, beside the published ERNIE 1.0 anchors
(110M parameters, large corpora; not measured here).

`--cmrc` adds CMRC 2018 (reading comprehension, examples/chinese/cmrc.yaml; character-level EM/F1), alone,
from each init and at the same lr, tested on CMRC 2018's dev set after choosing on its trial set.

    python benchmarks/chinese_tasks.py --seeds 1 2 3 --resume [--cmrc]
"""
import argparse
import dataclasses
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from common import RunStore, mean_std, paired_difference, write_result
from mtl.config import build_run, load_config
from mtl.trainers.multi_head import MultiHeadTrainer
from pretrain_zh import ENCODER as PRETRAINED, encoder_checksum, make_corpus

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chinese"
TASKS = ("sentiment", "ner", "lcqmc")
METRIC = {"sentiment": "sentiment.accuracy", "ner": "ner.f1", "lcqmc": "lcqmc.accuracy", "cmrc": "cmrc.f1"}
ERNIE = {"sentiment": 95.4, "ner": 93.8, "lcqmc": 87.4}  # ERNIE 1.0 test figures as published
# ERNIE 1.0 on CMRC 2018 dev, the mean over 10 seeds as Cui et al. (2019, Chinese BERT-wwm) report it
ERNIE_CMRC_DEV = {"exact_match": 64.3, "f1": 84.2}
INITS = ("pretrained", "random")


def run_config(init: str, tasks: tuple[str, ...], seed: int, lr: float, save_path: Path):
    """tasks.yaml cut to `tasks`, its encoder pretrained or built from the pretrained one's config (random). A task
    alone gets mix ratio 1: its budget is then its own epochs (the yaml's ratios size the others against MSRA)."""
    config = load_config(EXAMPLE / ("cmrc.yaml" if tasks == ("cmrc",) else "tasks.yaml"))
    kept = [t for t in config.tasks if t.name in tasks]
    if len(kept) == 1:
        kept = [dataclasses.replace(kept[0], mix_ratio=1.0)]
    config = dataclasses.replace(config, tasks=kept,
                                 trainer={**config.trainer, "seed": seed, "lr": lr,
                                          "sampling_reference": "ner" if "ner" in tasks else tasks[0]},
                                 saver={**config.saver, "save_path": str(save_path)})
    if init == "random":
        settings = json.loads((PRETRAINED / "config.json").read_text(encoding="utf-8"))
        size = {k: settings[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "intermediate_size", "max_position_embeddings")}
        config = dataclasses.replace(config, backbone={"_component_": "mtl.backbone.BERT.from_config",
                                                       "config": size})
    return config


def steps_per_epoch(trainer: MultiHeadTrainer) -> int:
    """Global steps in one epoch of the reference task: its batches times sum(mix_ratio) / its mix_ratio."""
    reference = next(t for t in trainer.tasks if t.name == trainer.reference)
    share = sum(t.mix_ratio for t in trainer.tasks) / reference.mix_ratio
    return math.ceil(reference.reader.steps_per_epoch * share)


def train_one(init: str, tasks: tuple[str, ...], seed: int, lr: float) -> dict:
    record = train_config(lambda save_path: run_config(init, tasks, seed, lr, save_path), init, tasks, seed, lr)
    return {"init": init, **record, "encoder_checksum": encoder_checksum()}


def train_config(make_config: Callable[[Path], Any], name: str, tasks: tuple[str, ...], seed: int,
                 lr: float) -> dict:
    """Train the run `make_config(save_path)` describes (checkpoints in a scratch folder), selecting on dev after
    each epoch of its reference task; test the best once. Its record (also chinese_me5.py's)."""
    with tempfile.TemporaryDirectory() as scratch:
        run = build_run(make_config(Path(scratch)))
        started = time.perf_counter()
        result = run.trainer.train(print_steps=0, eval_steps=steps_per_epoch(run.trainer), selector=run.selector)
        seconds = time.perf_counter() - started
        run.trainer.load_best()
        test = run.trainer.evaluate(run.eval_readers("test"))
    scores = {task: round(test[task][METRIC[task]], 2) for task in tasks}
    print(f"{name} {'+'.join(tasks)} lr {lr:g} seed {seed}: {scores}; {seconds:.0f}s", flush=True)
    return {"tasks": list(tasks), "seed": seed, "lr": lr, "test": scores, "all_test_metrics": test,
            "steps": result["steps"], "train_seconds": round(seconds, 1), "precision": run.trainer.precision,
            "dev_history": [{"step": h["step"], "metrics": h["metrics"]} for h in result["history"]]}


def run_or_load(store: RunStore, init: str, tasks: tuple[str, ...], seed: int, lr: float, resume: bool) -> dict:
    key = f"{init}-{'+'.join(tasks)}-lr{lr:g}-seed{seed}"
    record = store.load(key) if resume else None
    if record is None:
        record = train_one(init, tasks, seed, lr)
        store.save(key, record)
    return record


def best_dev(record: dict, task: str) -> float:
    return max(h["metrics"][task]["score"] for h in record["dev_history"])


def pick_lr(store: RunStore, lrs: list[float], seed: int, resume: bool) -> tuple[float, dict]:
    """The lr whose pretrained single-task runs reach the best mean dev score over the tasks."""
    scores = {lr: mean_std([best_dev(run_or_load(store, "pretrained", (task,), seed, lr, resume), task)
                            for task in TASKS])[0] for lr in lrs}
    return max(scores, key=scores.get), scores


def cell(records: list[dict], task: str, metric: str | None = None) -> dict:
    """One task's test scores (its main metric, or `metric`) over the seeds of one init and form, with the
    precision each run trained in."""
    scores = [round(r["all_test_metrics"][task][f"{task}.{metric}"], 2) if metric else r["test"][task]
              for r in records]
    mean, std = mean_std(scores)
    return {"mean": round(mean, 2), "std": round(std, 2), "per_seed": scores,
            "precisions": [r.get("precision", "not recorded") for r in records]}


def paired(a: dict, b: dict) -> dict:
    """a minus b seed by seed (both cells list their seeds in the same order), with mean, std and paired t."""
    return paired_difference(a["per_seed"], b["per_seed"])


def task_row(runs: dict, task: str) -> dict:
    """Each init alone and multi-task, pretrained minus random (alone), multi minus single (pretrained)."""
    row = {f"{init}.{form}": cell([r for r in runs[(init, form)] if task in r["test"]], task)
           for init in INITS for form in ("single", "multi")}
    row["pretrained_minus_random"] = paired(row["pretrained.single"], row["random.single"])
    row["multi_minus_single"] = paired(row["pretrained.multi"], row["pretrained.single"])
    row["multi_within_one_std_of_single"] = (row["pretrained.multi"]["mean"] >= row["pretrained.single"]["mean"]
                                             - row["pretrained.single"]["std"])
    return row


def cmrc_row(runs: dict) -> dict:
    """CMRC 2018 alone from each init: F1 (the main metric) and exact match, pretrained minus random on both."""
    row = {f"{init}.single": cell(runs[(init, "cmrc")], "cmrc") for init in INITS}
    row.update({f"{init}.single.exact_match": cell(runs[(init, "cmrc")], "cmrc", "exact_match") for init in INITS})
    row["pretrained_minus_random"] = paired(row["pretrained.single"], row["random.single"])
    row["pretrained_minus_random.exact_match"] = paired(row["pretrained.single.exact_match"],
                                                        row["random.single.exact_match"])
    return row


def runs_per_encoder(runs: dict) -> dict[str, int]:
    """How many runs name each encoder checksum ("unrecorded": runs kept before checksums were recorded)."""
    hashes = [r.get("encoder_checksum") or "unrecorded" for records in runs.values() for r in records]
    return {h: hashes.count(h) for h in sorted(set(hashes))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    parser.add_argument("--cmrc", action="store_true", help="also CMRC 2018, alone, from each init")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if not (PRETRAINED / "config.json").is_file():
        raise SystemExit(f"{PRETRAINED}: no pretrained encoder yet; run benchmarks/pretrain_zh.py until it finishes")
    make_corpus()  # the MSRA, LCQMC and CMRC splits the tasks read
    store, runs = RunStore("chinese_tasks"), {}
    lr, lr_scores = pick_lr(store, args.lrs, args.seeds[0], args.resume)
    print(f"lr {lr:g} (mean dev scores {lr_scores})", flush=True)
    for seed in args.seeds:
        for init in INITS:
            for tasks in [(task,) for task in TASKS] + [TASKS] + ([("cmrc",)] if args.cmrc else []):
                record = run_or_load(store, init, tasks, seed, lr, args.resume)
                form = "cmrc" if tasks == ("cmrc",) else "multi" if len(tasks) > 1 else "single"
                runs.setdefault((init, form), []).append(record)
    table = {task: task_row(runs, task) for task in TASKS}
    if args.cmrc:
        table["cmrc"] = cmrc_row(runs)
    path = write_result("chinese_tasks", {
        "model": f"BERT pretrained here ({PRETRAINED.name}, examples/chinese/pretrain.yaml) vs the same config "
                 "from random initialisation",
        "data": f"ChnSentiCorp, MSRA NER, LCQMC{', CMRC 2018' if args.cmrc else ''} (examples/chinese/make_corpus.py)",
        "settings": {"config": "examples/chinese/tasks.yaml", **({"cmrc_config": "examples/chinese/cmrc.yaml"}
                                                                 if args.cmrc else {}),
                     "threads": args.threads, "lr_candidates": args.lrs},
        "lr_search": {f"{k:g}": round(v, 2) for k, v in lr_scores.items()}, "chosen_lr": lr, "seeds": args.seeds,
        "tasks": table, "published_ernie_1_0": ERNIE, "encoder_checksum": encoder_checksum(),
        **({"published_ernie_1_0_cmrc2018_dev": ERNIE_CMRC_DEV} if args.cmrc else {}),
        "runs_per_encoder": runs_per_encoder(runs)})
    print(f"{'task':<10} {'pretrained':>14} {'random':>14} {'pre - rand':>14} {'multi':>14} {'multi - single':>14}"
          f" {'ERNIE 1.0':>9}")
    for task, row in table.items():
        cells = [row["pretrained.single"], row["random.single"], row["pretrained_minus_random"],
                 row.get("pretrained.multi"), row.get("multi_minus_single")]
        print(f"{task:<10} " + " ".join(f"{c['mean']:>7.2f} ± {c['std']:<4.2f}" if c else f"{'-':>14}" for c in cells)
              + f" {ERNIE.get(task, ERNIE_CMRC_DEV['f1']):>9}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
