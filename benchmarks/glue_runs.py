"""One SST-2 or MRPC run with model selection, kept on disk when it finishes (benchmarks/adapters.py).

The examples' own GLUE -> PALM conversion (examples/classification/sst2.py, examples/matching/mrpc.py).
Selection and test are kept apart: MRPC selects on GLUE's dev (408 pairs) and is tested once on its labelled
test set (1,725 pairs); SST-2's only labelled evaluation split is GLUE's dev (872 sentences), so it is the
test, and the model is selected on a held-out slice of train (`HELD_OUT` sentences drawn with a fixed seed,
not trained on). The run scores dev after every epoch, stops after `patience` epochs without a better score,
and tests the best dev model once. `adapter` (LoRA's arguments) trains the task as an adapter.
"""
import importlib.util
import random
import time
from pathlib import Path
from typing import Any

import torch

import mtl
from common import RESULTS, minilm_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"sst2": ROOT / "examples" / "classification" / "sst2.py",
            "mrpc": ROOT / "examples" / "matching" / "mrpc.py"}
HELD_OUT = 2000
DEFAULTS = {"epochs": 3.0, "lr": 5e-5, "batch_size": 32, "max_seqlen": 128, "patience": 2, "precision": "auto",
            "adapter": None}


def files(task: str) -> dict[str, Path]:
    """train / dev / test PALM TSVs of `task` (written once under results/runs/adapters/data/)."""
    spec = importlib.util.spec_from_file_location(f"{task}_example", EXAMPLES[task])
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = RESULTS / "runs" / "adapters" / "data" / task
    prepared = example.prepare(out=out)
    if task == "mrpc":
        return prepared
    if not (out / "fit.tsv").is_file():  # SST-2: GLUE's dev is the test; select on a held-out slice of train
        header, *rows = prepared["train"].read_text(encoding="utf-8").splitlines(keepends=True)
        random.Random(0).shuffle(rows)
        (out / "held_out.tsv").write_text(header + "".join(rows[:HELD_OUT]), encoding="utf-8")
        (out / "fit.tsv").write_text(header + "".join(rows[HELD_OUT:]), encoding="utf-8")
    return {"train": out / "fit.tsv", "dev": out / "held_out.tsv", "test": prepared["dev"]}


def glue_run(task: str, seed: int, settings: dict[str, Any], export_to: Path | None = None) -> dict:
    """Train, select on dev after each epoch, test the best model once; the run's record."""
    s = {**DEFAULTS, **settings}
    split = files(task)
    torch.manual_seed(seed)
    if task == "sst2":
        reader, head = mtl.reader.ClassifyReader(minilm_dir(), s["max_seqlen"], seed=seed), mtl.head.Classify(2, 384, 0.1)
    else:
        reader = mtl.reader.MatchReader(minilm_dir(), s["max_seqlen"], seed=seed, learning_strategy="pointwise")
        head = mtl.head.Match(2, 384, 0.1)
    reader.load_data(split["train"], batch_size=s["batch_size"])
    dev, test = (reader.eval_reader(split[name], batch_size=128) for name in ("dev", "test"))
    trainer = mtl.MultiHeadTrainer([mtl.Trainer(task, reader=reader, head=head, dev_reader=dev, adapter=s["adapter"])],
                                   backbone=mtl.backbone.BERT.from_pretrained(minilm_dir()), lr=s["lr"],
                                   num_epochs=s["epochs"], seed=seed, precision=s["precision"])
    started = time.perf_counter()
    result = trainer.train(print_steps=0, eval_steps=reader.steps_per_epoch,
                           selector=mtl.Selector(early_stopping_patience=s["patience"]))
    seconds = time.perf_counter() - started
    trainer.load_best()
    if export_to is not None:
        trainer.export(export_to)
    curve = [{"epoch": round(h["step"] / reader.steps_per_epoch, 2), "score": h["score"]} for h in result["history"]]
    best = max(curve, key=lambda point: point["score"])
    metrics = trainer.evaluate({task: test})[task]
    print(f"{task} seed {seed} lr {s['lr']:g}{' lora' if s['adapter'] else ''}: best dev epoch {best['epoch']}; "
          f"test " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f"; {seconds:.0f}s", flush=True)
    return {"data": task, "seed": seed, "settings": s, "test": metrics, "dev_curve": curve, "best_epoch": best["epoch"],
            "best_dev": best, "steps": result["steps"], "train_seconds": round(seconds, 1),
            "precision": trainer.precision}
