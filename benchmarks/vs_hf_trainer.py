"""SNIPS intent classification: mtl's defaults vs transformers' `Trainer` in three settings, one process run.

Settings of `Trainer`: fp32; bf16=True; bf16 + train_sampling_strategy="group_by_length" (this transformers
version's name for length grouping). Every side trains MiniLM (pooler + dropout + linear classifier) with
batch 32, the same number of steps (a fraction of an epoch: `--fraction`), lr, linear warmup (10% of the
steps) and decay, weight decay 0.01, clipping at 1.0, fused AdamW; then dev accuracy. Runs alternate
(mtl, fp32, bf16, bf16+group, then again each round), each in a fresh Python process started by this script
(`--run`), as a user runs one training per process: no run inherits the heap or the threads another left.
Throughput counts the steps after the first `--warmup` of each run.

    python benchmarks/vs_hf_trainer.py --fraction 0.3 --rounds 2 --threads 1
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mtl
from common import DATA, load_average, minilm_dir, page_faults, parse_speed_args, run_in_child, write_result
from overhead import MODEL

HF_SETTINGS = {"hf_fp32": {}, "hf_bf16": {"bf16": True},
               "hf_bf16_group_by_length": {"bf16": True, "train_sampling_strategy": "group_by_length"}}


def snips(split: str) -> tuple[list[str], list[str]]:
    """(texts, intent labels) of one split: `seq.in` and `label`."""
    texts = (DATA / "snips" / split / "seq.in").read_text(encoding="utf-8").splitlines()
    labels = (DATA / "snips" / split / "label").read_text(encoding="utf-8").splitlines()
    return [t.strip() for t in texts], [l.strip() for l in labels]


def write_tsv(folder: Path, split: str) -> Path:
    texts, labels = snips(split)
    path = folder / f"{split}.tsv"
    path.write_text("label\ttext_a\n" + "".join(f"{l}\t{t}\n" for t, l in zip(texts, labels)), encoding="utf-8")
    return path


def run_mtl(folder: Path, labels: list[str], steps: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    reader = mtl.reader.ClassifyReader(minilm_dir(), 128, label_map=labels, seed=args.seed)
    reader.load_data(folder / "train.tsv", batch_size=32)
    dev = reader.eval_reader(folder / "dev.tsv", batch_size=128)
    encoder = mtl.backbone.BERT.from_pretrained(minilm_dir())
    head = mtl.head.Classify(len(labels), encoder.hidden_size, 0.1)
    trainer = mtl.MultiHeadTrainer([mtl.Trainer("snips", reader=reader, head={"intent": head}, dev_reader=dev)],
                                   backbone=encoder, lr=args.lr, num_epochs=steps / reader.steps_per_epoch,
                                   seed=args.seed)
    trainer.train(print_steps=0, max_steps=args.warmup)
    faults, started = page_faults(), time.perf_counter()
    trainer.train(print_steps=0)
    seconds, faults = time.perf_counter() - started, page_faults() - faults
    timed_steps = trainer.global_step - args.warmup
    accuracy = trainer.evaluate()["snips"]["intent.accuracy"]
    return {"examples_per_s": 32 * timed_steps / seconds, "dev_accuracy": accuracy, "steps": trainer.global_step,
            "precision": trainer.precision, "page_faults_per_step": faults / timed_steps}


def run_hf(folder: Path, labels: list[str], steps: int, options: dict, args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    index = {label: i for i, label in enumerate(labels)}

    def dataset(split: str) -> list[dict]:
        texts, gold = snips(split)
        encoded = tokenizer(texts, truncation=True, max_length=128)
        return [{**{k: encoded[k][i] for k in encoded}, "labels": index[g]} for i, g in enumerate(gold)]

    class Clock(TrainerCallback):
        """Time (and page faults) from the end of the warm-up steps to the end of training."""
        start = end = faults = None

        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step == args.warmup:
                Clock.start, Clock.faults = time.perf_counter(), page_faults()

        def on_train_end(self, targs, state, control, **kwargs):
            Clock.end, Clock.faults = time.perf_counter(), page_faults() - Clock.faults

    model = _hf_model(minilm_dir(), len(labels), args.seed)
    targs = TrainingArguments(output_dir=str(folder / "hf"), per_device_train_batch_size=32, max_steps=steps,
                              learning_rate=args.lr, warmup_steps=int(0.1 * steps), lr_scheduler_type="linear",
                              weight_decay=0.01, max_grad_norm=1.0, logging_strategy="no", save_strategy="no",
                              report_to="none", use_cpu=True, disable_tqdm=True, seed=args.seed,
                              per_device_eval_batch_size=128, **options)
    trainer = Trainer(model=model, args=targs, train_dataset=dataset("train"),
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[Clock()])
    trainer.train()
    seconds = Clock.end - Clock.start
    # label_ids, not the dataset's order: with group_by_length this transformers version orders the eval
    # batches by length too, and predictions come back in that order
    out = trainer.predict(dataset("dev"))
    right = (torch.as_tensor(out.predictions).argmax(-1) == torch.as_tensor(out.label_ids)).float().mean()
    return {"examples_per_s": 32 * (steps - args.warmup) / seconds, "dev_accuracy": 100 * float(right),
            "steps": steps, "optim": str(targs.optim), "page_faults_per_step": Clock.faults / (steps - args.warmup)}


def _hf_model(folder: str, num_labels: int, seed: int):
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels,
                                                              attn_implementation="sdpa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of one epoch each run trains")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5, help="steps of each run left out of the timing")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--run", choices=["mtl", *HF_SETTINGS], help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parse_speed_args(parser)
    labels = sorted(set(snips("train")[1]))
    steps = int(args.fraction * (len(snips("train")[0]) // 32))
    if args.run is not None:
        result = run_mtl(args.folder, labels, steps, args) if args.run == "mtl" else \
            run_hf(args.folder, labels, steps, HF_SETTINGS[args.run], args)
        print(json.dumps(result))
        return
    runs = {name: [] for name in ["mtl", *HF_SETTINGS]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for split in ("train", "dev"):
            write_tsv(folder, split)
        for r in range(args.rounds):
            for name in runs:
                result = run_in_child(__file__, "--run", name, "--folder", str(folder))
                runs[name].append(result)
                print(f"round {r} {name:<26} {result['examples_per_s']:8.1f} ex/s  dev accuracy "
                      f"{result['dev_accuracy']:.2f}  page faults/step {result['page_faults_per_step']:.0f}",
                      flush=True)
    speed = {n: statistics.median(x["examples_per_s"] for x in rs) for n, rs in runs.items()}
    accuracy = {n: statistics.fmean(x["dev_accuracy"] for x in rs) for n, rs in runs.items()}
    fastest = max(HF_SETTINGS, key=speed.get)
    ratio = speed["mtl"] / speed[fastest]
    paired = statistics.median(m["examples_per_s"] / h["examples_per_s"] for m, h in zip(runs["mtl"], runs[fastest]))
    same_accuracy = abs(accuracy["mtl"] - accuracy[fastest]) <= 0.3
    print(f"{'side':<28}{'examples/s':>12}{'dev acc':>9}{'ratio':>8}")
    for name in runs:
        print(f"{name:<28}{speed[name]:>12.1f}{accuracy[name]:>9.2f}{speed['mtl'] / speed[name]:>8.2f}")
    print(f"mtl / fastest Trainer setting ({fastest}): {ratio:.2f}x, median of paired rounds {paired:.2f}x "
          f"(goal >= 1.3 at dev accuracy within 0.3: {'yes' if same_accuracy else 'no'})")
    path = write_result("vs_hf_trainer", {
        "model": MODEL, "data": f"snips intent (label file) over seq.in; {steps} steps of batch 32 "
                                f"({args.fraction:g} of an epoch) per run; dev accuracy after training",
        "settings": {**vars(args), "steps": steps, "hf_settings": HF_SETTINGS,
                     "mtl": "ClassifyReader + Classify head, MultiHeadTrainer defaults"},
        "metrics": {"mtl_examples_per_s": speed["mtl"], "mtl_dev_accuracy": accuracy["mtl"]},
        "baseline": {n: {"examples_per_s": speed[n], "dev_accuracy": accuracy[n]} for n in HF_SETTINGS},
        "per_run": runs,
        "ratio": {**{f"examples_per_s_vs_{n}": speed["mtl"] / speed[n] for n in HF_SETTINGS},
                  "vs_fastest_median_of_paired_rounds": paired},
        "goal": {"ratio_vs_fastest": 1.3, "fastest": fastest, "ratio": ratio, "accuracy_within_0.3": same_accuracy,
                 "met": ratio >= 1.3 and same_accuracy},
        "load_average": load_average(),
        "notes": "examples/s: median over rounds, steps after the warm-up steps of each run; accuracy: mean over rounds"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
