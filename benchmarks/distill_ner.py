"""Distillation on CoNLL-2003 NER: an MPNet-base teacher -> a MiniLM-L6 student, against MiniLM-L6 trained
directly (benchmarks/ner.py's runs of the same seeds: paired differences).

The recipe of benchmarks/ner.py (its head config: `chosen` in results/conll2003_ner.json; valid F1 after each
epoch, early stopping, the best valid model scored on test once), with:
  teacher  MPNet-base, the heads at `--head-lr-scale` times the encoder's lr (as base_encoder.py), up to
           `--teacher-epochs` epochs, lr picked on valid with the first seed among `--teacher-lrs` (extended
           past its end while the best sits there: common.search_lr); kept as
           model folders (results/runs/distill_conll/models/), the students' teachers
  student  MiniLM-L6 from the teacher of its seed (per-word targets: the tokenizers differ; a CRF student
           learns the teacher's marginals), alpha `--alpha`, temperature `--temperature`, at the direct
           model's lr and budget
Every run is kept in results/runs/distill_conll/ (`--resume` skips it); the teacher labels the training set
once (cached). Writes results/distill_ner.json: `metrics` nested as data set -> model -> metric
(`conll.teacher.f1`, `conll.student.f1`, `conll.direct.f1`), `ratio` (student over teacher) the same way.
A base-size CoNLL run costs about 8x a MiniLM one here: run it part by part.

    mtl get-encoder all-mpnet-base-v2
    python benchmarks/distill_ner.py --parts teacher --seeds 1 --resume
    python benchmarks/distill_ner.py --seeds 1 2 3 --resume
"""
import argparse
import json
import logging

import torch

from common import RESULTS, RunStore, paired_difference, search_lr, write_result
from mtl.components.backbones.store import encoder_dir
from ner import summary, train_one

KEYS = ("f1", "precision", "recall")
PUBLISHED = {"textbrewer_3_layer_student.f1": 87.5}


def teachers(store: RunStore, args: argparse.Namespace, crf: bool, direct: dict) -> tuple[list[dict], float]:
    """The teacher runs of every seed at the lr picked on valid with the first seed; and that lr."""
    settings = {**direct, "epochs": args.teacher_epochs, "patience": args.patience}

    def run(lr: float, seed: int) -> dict:
        key = f"teacher-lr{lr:g}-seed{seed}"
        scaled = {**settings, "lr": lr, "head_lr": lr * args.head_lr_scale}
        return store.keep(key, scaled, args.resume, lambda: train_one(
            seed, crf, scaled, str(encoder_dir(args.encoder)), export_to=store.folder / "models" / key))
    first = args.seeds[0]
    scores = search_lr(lambda lr: run(lr, first)["best_dev_f1"], args.teacher_lrs)
    lr = max(scores, key=scores.get)
    return [run(lr, seed) for seed in args.seeds], lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("teacher", "student"), default=["teacher", "student"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--encoder", default="all-mpnet-base-v2")
    parser.add_argument("--teacher-lrs", type=float, nargs="+", default=[5e-5, 1e-4])
    parser.add_argument("--teacher-epochs", type=float, default=3)
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--head-lr-scale", type=float, default=100.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    reference = json.loads((RESULTS / "conll2003_ner.json").read_text(encoding="utf-8"))
    crf, direct = reference["chosen"] == "crf", reference["settings"]
    store = RunStore("distill_conll")
    teacher_runs, lr = teachers(store, args, crf, direct)
    models = {"teacher": summary(teacher_runs)}
    if "student" in args.parts:
        soft = {**direct, "alpha": args.alpha, "temperature": args.temperature}
        models["student"] = summary([store.keep(f"student-seed{seed}", soft, args.resume, lambda seed=seed: train_one(
            seed, crf, soft, teacher=store.folder / "models" / f"teacher-lr{lr:g}-seed{seed}"))
            for seed in args.seeds])
        direct_store = RunStore("conll2003_ner")
        models["direct"] = summary([direct_store.load(f"{reference['chosen']}-seed{seed}") for seed in args.seeds])
    write(args, models, lr, reference["chosen"])


def write(args: argparse.Namespace, models: dict, teacher_lr: float, head: str) -> None:
    metrics = {name: {k: model["metrics"][k] for k in KEYS} for name, model in models.items()}
    per_seed = {name: [run["metrics"]["f1"] for run in model["per_seed"]] for name, model in models.items()}
    ratio = {"student": {k: round(metrics["student"][k] / metrics["teacher"][k], 4) for k in KEYS}} \
        if "student" in metrics else {}
    paired = {"student-direct": {"f1": paired_difference(per_seed["student"], per_seed["direct"])}} \
        if "student" in metrics else {}
    path = write_result("distill_ner", {
        "data": "CoNLL-2003 English: train; model chosen on valid after each epoch; test scored once (seqeval)",
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("resume", "parts")},
                     "teacher_lr": teacher_lr, "head": head},
        "metrics": {"conll": metrics}, "std": {"conll": {name: m["std"] for name, m in models.items()}},
        "ratio": {"conll": ratio}, "paired": {"conll": paired}, "published": PUBLISHED,
        "precisions": {name: m["precisions"] for name, m in models.items()},
        "details": {"conll": models}})
    for name, model in models.items():
        print(f"{name:<10}" + "  ".join(f"{k} {model['metrics'][k]:6.2f} ± {model['std'][k]:.2f}" for k in KEYS))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
