"""One joint intent + slot training run on ATIS or SNIPS with MiniLM, kept on disk when it finishes.

Shared by the multi-task benchmarks (joint_intent_slot.py, joint_ablation.py, palm_two_task.py). A run
trains with the given settings, is scored on dev after every epoch, keeps the best dev model (optionally
stopping early), and evaluates it on test once. Its record holds the settings, the dev curve, the test
metrics and, per test utterance, whether the intent and the slots were right (so that two single-task
runs can be scored together as a pipeline). Records live in results/runs/<benchmark>/<key>.json: a stopped
benchmark loses at most the run in progress, and `--resume` skips the runs already there.
A setting `encoder` names an encoder assembled by `mtl get-encoder` (default: MiniLM); `layers` keeps only
those encoder layers; `teacher` (a model folder under results/) makes the run a distilled student
(`alpha`, `temperature`); `adapter` (LoRA's arguments) trains the task as a LoRA adapter over the frozen
encoder; `train_folder` (under results/) trains on another training set than the data set's own (a subset);
`unlabelled` (a text file under results/) adds its texts as a task without labels that shares the heads,
labelled by the teacher. Settings added later count as their default in records written before them.
"""
import time
from pathlib import Path
from typing import Any

import torch

import mtl
from mtl.distill import Teacher, distill_into
from common import DATA, RESULTS, RunStore, minilm_dir
from mtl.components.backbones.store import encoder_dir
from mtl.trainers.balancing import DynamicWeightAverage, LossBalancer, PCGrad, UncertaintyWeighting

HEADS = {"joint": ("intent", "slots"), "intent": ("intent",), "slots": ("slots",), "two_task": ("intent", "slots")}
DEFAULTS = {"epochs": 5.0, "lr": 1e-4, "batch_size": 32, "max_seqlen": 64, "precision": "auto",
            "slot_loss_coef": 1.0, "crf": False, "sentence_vector": "pooled_output", "max_grad_norm": 1.0,
            "balancer": "sum", "patience": None, "head_lr": None,
            "layers": None, "teacher": None, "alpha": 0.5, "temperature": 2.0, "adapter": None,
            "train_folder": None, "unlabelled": None}
TEACHER_CACHE = RESULTS / "runs" / "teacher_targets"  # a teacher's targets, computed once per data set


def make_balancer(name: str, task: str, seed: int) -> LossBalancer:
    return {"sum": lambda: LossBalancer(), "dwa": lambda: DynamicWeightAverage(),
            "uncertainty": lambda: UncertaintyWeighting([f"{task}.intent", f"{task}.slots"]),
            "uncertainty_model_lr": lambda: UncertaintyWeighting([f"{task}.intent", f"{task}.slots"], lr=None),
            "pcgrad": lambda: PCGrad(seed)}[name]()


def train_run(data: str, mode: str, seed: int, settings: dict[str, Any], model_dir: str | None = None,
              export_to: Path | None = None) -> dict:
    """Train, select on dev after each epoch, evaluate the best model on test once; the run's record.
    `model_dir`: the pretrained encoder and its tokenizer (default MiniLM); `export_to`: where to export the
    best model (a folder `mtl.load` reads), if anywhere."""
    s = {**DEFAULTS, **settings}
    folder = DATA / data
    torch.manual_seed(seed)
    model_dir = model_dir or (encoder_dir(s["encoder"]) if "encoder" in s else minilm_dir())
    reader = mtl.reader.IntentSlotReader(model_dir, s["max_seqlen"], seed=seed)
    reader.load_data(RESULTS / s["train_folder"] if s["train_folder"] else folder / "train", batch_size=s["batch_size"])
    dev, test = (reader.eval_reader(folder / split, batch_size=128) for split in ("dev", "test"))
    encoder = mtl.backbone.BERT.from_pretrained(model_dir, layers=s["layers"])
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, 0.1, use_crf=s["crf"],
                                       slot_loss_coef=s["slot_loss_coef"], sentence_vector=s["sentence_vector"])
    tasks = _tasks(data, mode, reader, dev, heads, seed, s)
    trainer = mtl.MultiHeadTrainer(tasks, backbone=encoder, num_epochs=s["epochs"], seed=seed,
                                   precision=s["precision"], balancer=make_balancer(s["balancer"], data, seed))
    trainer.build_backward(mtl.optimizer.Adam(lr=s["lr"], max_grad_norm=s["max_grad_norm"], head_lr=s["head_lr"]))
    if s["teacher"]:  # a folder under results/: the teacher labels the training data once (cached)
        teacher = Teacher(RESULTS / s["teacher"], temperature=s["temperature"], cache_dir=TEACHER_CACHE)
        distill_into(trainer, {task.name: teacher for task in tasks}, alpha=s["alpha"])
    tasks = [task for task in tasks if task.reuse_head_with is None]  # scored: the tasks with heads of their own
    selector = mtl.Selector(early_stopping_patience=s["patience"])
    every = reader.steps_per_epoch * len(trainer.tasks)  # an epoch of the reference task's data, in steps
    started = time.perf_counter()
    result = trainer.train(print_steps=0, eval_steps=every, selector=selector)
    seconds = time.perf_counter() - started
    trainer.load_best()
    if export_to is not None:
        trainer.export(export_to)
    records = _merged_predictions(trainer, tasks, test)
    metrics = _test_metrics(trainer, tasks, test, records, data)
    golds = [f.meta["gold"] for f in test.features]
    curve = [{"epoch": round(h["step"] / every, 2), "score": h["score"], **_flat(h["metrics"])}
             for h in result["history"]]
    best = max(curve, key=lambda point: point["score"])
    record = {"data": data, "mode": mode, "seed": seed, "settings": s, "test": metrics, "dev_curve": curve,
              "best_epoch": best["epoch"], "best_dev": best, "steps": result["steps"],
              "stopped_early": result["stopped_early"], "train_seconds": round(seconds, 1),
              "precision": trainer.precision,  # what "auto" resolved to on this machine
              "intent_right": _bits(r["intent"]["label"] == g["intent_ids"] for r, g in zip(records, golds))
              if "intent" in HEADS[mode] else None,
              "slots_right": _bits(r["slots"]["tags"] == g["slot_ids"] for r, g in zip(records, golds))
              if "slots" in HEADS[mode] else None}
    print(f"{data} {mode} seed {seed} {_changed(s)}: best dev epoch {best['epoch']}; test "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f"; {seconds:.0f}s", flush=True)
    return record


def _tasks(data: str, mode: str, reader: Any, dev: Any, heads: dict, seed: int, s: dict) -> list:
    """One task with the mode's heads; or PALM's two-task form: a `slots` task and an `intent` task, each
    with its own reader over the same data (own batch order), drawn 1:1 by mix ratio."""
    if mode != "two_task":
        main = mtl.Trainer(data, reader=reader, head={h: heads[h] for h in HEADS[mode]}, dev_reader=dev,
                           adapter=s["adapter"])
        if not s["unlabelled"]:
            return [main]
        texts = (RESULTS / s["unlabelled"]).read_text(encoding="utf-8").splitlines()
        return [main, mtl.Trainer(f"{data}_unlabelled", reader=reader.from_texts(texts, s["batch_size"]),
                                  reuse_head_with=main)]
    intent_reader = mtl.reader.IntentSlotReader(minilm_dir(), s["max_seqlen"], seed=seed + 1000)
    intent_reader.load_data(DATA / data / "train", batch_size=s["batch_size"])
    return [mtl.Trainer("slots", reader=reader, head={"slots": heads["slots"]}, dev_reader=dev),
            mtl.Trainer("intent", reader=intent_reader, head={"intent": heads["intent"]}, dev_reader=dev)]


def _merged_predictions(trainer: Any, tasks: list, test: Any) -> list[dict]:
    """Per test utterance, every head's decoded output (one record even in the two-task form)."""
    merged = [dict(r) for r in trainer.predict(tasks[0].name, test)]
    for task in tasks[1:]:
        for record, other in zip(merged, trainer.predict(task.name, test)):
            record.update({k: v for k, v in other.items() if k != "text"})
    return merged


def _test_metrics(trainer: Any, tasks: list, test: Any, records: list[dict], data: str) -> dict[str, float]:
    """The test metrics of a one-task run; for the two-task form each task's, and sentence accuracy from
    both tasks' predictions together."""
    if len(tasks) == 1:
        return trainer.evaluate({data: test})[data]
    metrics = _flat(trainer.evaluate({t.name: test for t in tasks}))
    golds = [f.meta["gold"] for f in test.features]
    right = [r["intent"]["label"] == g["intent_ids"] and r["slots"]["tags"] == g["slot_ids"]
             for r, g in zip(records, golds)]
    return {**metrics, "frame_accuracy": 100.0 * sum(right) / len(right)}


def _flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """{task: {metric: v}} -> {metric: v} (one task) or {task.metric: v} without repeating `task.task.`."""
    if len(metrics) == 1:
        return dict(next(iter(metrics.values())))
    return {(k if k.startswith(f"{task}.") else f"{task}.{k}"): v for task, values in metrics.items()
            for k, v in values.items()}


def _bits(flags: Any) -> str:
    return "".join("1" if flag else "0" for flag in flags)


def _changed(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if DEFAULTS.get(k) != v) or "defaults"


def pipeline_frame_accuracy(intent_run: dict, slots_run: dict) -> float:
    """Sentence accuracy of two separate single-task models used together."""
    both = [a == b == "1" for a, b in zip(intent_run["intent_right"], slots_run["slots_right"])]
    return 100.0 * sum(both) / len(both)


def run_or_load(store: RunStore, key: str, data: str, mode: str, seed: int, settings: dict,
                resume: bool, export: bool = False) -> dict:
    """The stored record when `resume` and its settings match, else a fresh run (stored when it ends).
    `export`: the best model is also kept as a model folder, `store.models/<key>` (a distillation teacher)."""
    stored = store.load(key)
    wanted = {**DEFAULTS, **settings}
    if resume and stored is not None and {**DEFAULTS, **stored["settings"]} == wanted and stored["seed"] == seed:
        return stored
    record = train_run(data, mode, seed, settings, export_to=store.folder / "models" / key if export else None)
    store.save(key, record)
    return record
