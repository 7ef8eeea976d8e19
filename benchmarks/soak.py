"""Soak: a tiny model trained for many steps, with checkpoints and logs as in a real run; does memory grow?

A tiny random BERT (hidden 64, 2 layers, the MiniLM vocabulary) learns joint intent + slots on ATIS (or
SNIPS) for `--steps` steps on CPU, saving every `--save-steps` (keeping 2) and logging every 100. The
process's resident memory (RSS, from /proc/self/statm) is read every `--every` steps; the figures that
matter are RSS after `--warmup` steps and at the end. Writes benchmarks/results/soak.json.

    python benchmarks/soak.py --steps 3000
"""
import argparse
import gc
import os
import tempfile
import time

import torch

import mtl
from common import DATA, minilm_dir, write_result

TINY = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "max_position_embeddings": 64, "type_vocab_size": 2}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size now (not the peak), in MiB: /proc/self/statm's second field is resident pages."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--data", default="atis")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vocab = minilm_dir()
    reader = mtl.reader.IntentSlotReader(vocab, 48, seed=args.seed)
    reader.load_data(DATA / args.data / "train", batch_size=args.batch_size)
    encoder = mtl.backbone.BERT.from_config({**TINY, "vocab_size": reader.tokenizer.vocab_size})
    heads = mtl.head.intent_slot_heads(reader, 64, dropout_prob=0.1)
    task = mtl.Trainer(args.data, reader=reader, head=heads)
    epochs = args.steps / reader.steps_per_epoch
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=1e-3, num_epochs=epochs, seed=args.seed,
                                   precision="fp32", device="cpu")
    samples: list[tuple[int, float, float]] = []
    real_step, started = trainer._train_step, time.perf_counter()

    def step(task_, batch):
        result = real_step(task_, batch)
        done = trainer.global_step + 1
        if done == args.warmup or done % args.every == 0:
            gc.collect()
            samples.append((done, rss_mb(), time.perf_counter() - started))
            print(f"{done:>7} {samples[-1][1]:>9.1f} {samples[-1][2]:>8.1f}", flush=True)
        return result
    trainer._train_step = step
    print(f"{'step':>7} {'rss_mb':>9} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as save_path:
        trainer.set_saver(save_path, save_steps=args.save_steps, keep_last=2)
        result = trainer.train(print_steps=100)
    gc.collect()
    end = rss_mb()
    after_warmup = next(rss for done, rss, _ in samples if done == args.warmup)
    growth = 100 * (end - after_warmup) / after_warmup
    print(f"steps {result['steps']}: RSS {after_warmup:.1f} MiB after {args.warmup} steps, {end:.1f} MiB at the "
          f"end ({growth:+.2f}%), {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        path = write_result("soak", {
            "model": f"random BERT {TINY}", "data": f"{args.data} train, joint intent + slots, batch "
                                                  f"{args.batch_size}, saves every {args.save_steps} steps",
            "seeds": [args.seed], "steps": result["steps"],
            "metrics": {"rss_mb_after_warmup": round(after_warmup, 1), "rss_mb_end": round(end, 1),
                        "growth_percent": round(growth, 2), "within_5_percent": abs(growth) <= 5},
            "rss_mb_by_step": [[done, round(rss, 1)] for done, rss, _ in samples],
            "seconds": round(time.perf_counter() - started, 1), "skipped_steps": result["skipped_steps"]})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
