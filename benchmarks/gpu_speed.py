"""Speed on a GPU: a BERT-base-sized encoder (random weights, from a config) trained under mtl's defaults.

ATIS joint intent + slots, batch 32, through `MultiHeadTrainer` with its defaults on the device (bf16 autocast
where the GPU supports it, fused AdamW, padding to each batch's longest with length grouping). Records
sequences/s and MFU: the encoder's training FLOP/s on real tokens (mfu.py's formula) over this GPU's bf16
matmul peak, a large square product measured in the same run, in rounds alternating with training. The
tokenizer is MiniLM's (BERT's uncased 30522-word vocabulary); weights are random, which does not change speed.

    python benchmarks/gpu_speed.py --rounds 5 --steps 50

Writes benchmarks/results/gpu_speed.json on a GPU only; elsewhere (a smoke run, e.g.
`--device cpu --layers 2 --hidden 128 --steps 3 --rounds 1`) it prints the table and writes nothing.
"""
import argparse
import logging
import statistics
import time

import torch

import mtl
from common import load_average, write_result
from mfu import FlopCount, encoder_flops, matmul_flops, synchronize
from overhead import atis_reader


def bert_config(layers: int, hidden: int) -> dict:
    """BERT-base's shape by default (12 layers, hidden 768, 12 heads of 64, FFN 4 x hidden)."""
    return {"model_type": "bert", "vocab_size": 30522, "num_hidden_layers": layers, "hidden_size": hidden,
            "num_attention_heads": max(1, hidden // 64), "intermediate_size": 4 * hidden,
            "max_position_embeddings": 512}


def build(args: argparse.Namespace, count: FlopCount) -> mtl.MultiHeadTrainer:
    torch.manual_seed(args.seed)
    reader = count.wrap(atis_reader(args.seed, args.batch_size))
    encoder = mtl.backbone.BERT.from_config(bert_config(args.layers, args.hidden))
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
    return mtl.MultiHeadTrainer([mtl.Trainer("atis", reader=reader, head=heads)], backbone=encoder, lr=1e-4,
                                num_epochs=50, seed=args.seed, device=args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    parser.add_argument("--steps", type=int, default=50, help="training steps per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--size", type=int, default=8192, help="matrix size for the peak")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    count = FlopCount()
    trainer = build(args, count)
    model = trainer.build_forward()
    rows = {"bf16_peak": [], "achieved_real": [], "sequences_per_s": []}
    for r in range(args.rounds + 1):
        peak = matmul_flops(args.size, torch.bfloat16, args.reps, args.device)
        before = count.snapshot()
        started = time.perf_counter()
        trainer.train(print_steps=0, max_steps=trainer.global_step + args.steps)
        synchronize(args.device)
        seconds = time.perf_counter() - started
        real, _, examples, sq_real, _ = (a - b for a, b in zip(count.snapshot(), before))
        achieved = encoder_flops(model, real, sq_real) / seconds
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: peak bf16 {peak / 1e12:.1f} TFLOP/s; training "
              f"{achieved / 1e12:.2f} TFLOP/s on real tokens, {examples / seconds:.1f} sequences/s", flush=True)
        if r > 0:
            for key, value in zip(rows, (peak, achieved, examples / seconds)):
                rows[key].append(value)
    median = {k: statistics.median(v) for k, v in rows.items()}
    mfu = 100 * median["achieved_real"] / median["bf16_peak"]
    print(f"sequences/s {median['sequences_per_s']:.1f}; MFU (real tokens) {mfu:.1f}% of "
          f"{median['bf16_peak'] / 1e12:.1f} TFLOP/s; precision {trainer.precision}")
    if torch.device(args.device).type != "cuda":
        print("not a GPU: nothing written")
        return
    path = write_result("gpu_speed", {
        "model": f"BERT-shaped encoder from a config, random weights: {bert_config(args.layers, args.hidden)}",
        "data": f"atis train, joint intent + slots, batch {args.batch_size}, mtl defaults",
        "settings": {**vars(args), "precision": trainer.precision, "gpu": torch.cuda.get_device_name(args.device)},
        "metrics": {"sequences_per_s": median["sequences_per_s"], "mfu_percent_real_tokens": mfu,
                    "achieved_tflops_real_tokens": median["achieved_real"] / 1e12},
        "baseline": {"bf16_matmul_peak_tflops": median["bf16_peak"] / 1e12},
        "ratio": {"mfu": median["achieved_real"] / median["bf16_peak"]}, "per_round": rows,
        "load_average": load_average()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
