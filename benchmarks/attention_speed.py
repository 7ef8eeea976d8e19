"""Training attention on the CPU without dropout: SDPA vs mtl's hand-written softmax attention.

1. The operator: forward + backward of transformers' SDPA attention function and of
   `mtl.speed.dropout.softmax_attention` on the same inputs (MiniLM's 12 heads of 32, a quarter of each
   row's keys masked as padding, `--tokens` tokens per batch), in fp32 and bf16, for several sequence
   lengths, alternating the two in rounds: median ms per call. This is what sets `HAND_WRITTEN_MAX_KEYS`,
   per dtype the longest sequence the hand-written path takes without dropout (the default of
   `SpeedKernels(hand_written_max_keys=)`).
2. Training: ATIS joint intent + slots, MiniLM, batch 32, mtl's defaults in bf16 and in fp32, with the
   attention-probability dropout set to 0 (as in ALBERT's configs). Rounds alternate the hand-written path
   (fast dropout installed with a threshold of any length for the round) with SDPA (a threshold of none):
   steps/s, same process.

    python benchmarks/attention_speed.py --rounds 5 --steps 20 --threads 2
"""
import argparse
import statistics
import time

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import mtl.speed.dropout as fast
from mtl.speed import SpeedKernels
from common import load_average, parse_speed_args, write_result
from overhead import MODEL, atis_reader, joint_trainer

HEADS, DIM = 12, 32


def attention_inputs(length: int, tokens: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    batch = max(1, tokens // length)
    q, k, v = (torch.randn(batch, HEADS, length, DIM, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[:, :, :, length - length // 4:] = False
    return q, k, v, mask


def time_call(attend, inputs: tuple[torch.Tensor, ...], calls: int) -> float:
    """Milliseconds per forward + backward."""
    started = time.perf_counter()
    for _ in range(calls):
        attend(*inputs).float().square().sum().backward()
    return 1000 * (time.perf_counter() - started) / calls


def operator_rows(args: argparse.Namespace) -> list[dict]:
    module = nn.Module()  # transformers passes the attention module; SDPA's function reads is_causal only
    module.is_causal = False
    sides = {"sdpa": lambda q, k, v, m: sdpa_attention_forward(module, q, k, v, m, dropout=0.0)[0],
             "hand_written": lambda q, k, v, m: fast.softmax_attention(q, k, v, m)}
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for length in args.lengths:
            inputs = attention_inputs(length, args.tokens, dtype)
            times = {side: [] for side in sides}
            for r in range(args.rounds + 1):
                for side, attend in sides.items():
                    took = time_call(attend, inputs, args.calls)
                    if r > 0:
                        times[side].append(took)
            median = {side: statistics.median(t) for side, t in times.items()}
            rows.append({"dtype": str(dtype).removeprefix("torch."), "length": length, "batch": inputs[0].shape[0],
                         "sdpa_ms": median["sdpa"], "hand_written_ms": median["hand_written"],
                         "sdpa_over_hand_written": median["sdpa"] / median["hand_written"]})
            row = rows[-1]
            print(f"{row['dtype']:<9}{length:>7}{row['batch']:>7}{row['sdpa_ms']:>10.2f}{row['hand_written_ms']:>10.2f}"
                  f"{row['sdpa_over_hand_written']:>8.2f}", flush=True)
    return rows


def training_speed(args: argparse.Namespace, precision: str) -> dict:
    # the round installs fast dropout itself, with its threshold; the trainer keeps its gradient buffer
    trainer = joint_trainer(atis_reader(args.seed, 32), args.seed, epochs=10, precision=precision,
                            fast_dropout=False)
    model = trainer.build_forward()
    for module in model.modules():
        if type(module).__name__.endswith("SelfAttention"):
            module.dropout.p = 0.0
    every_length = {torch.bfloat16: 1 << 30, torch.float32: 1 << 30}
    times = {"hand_written": [], "sdpa": []}
    for r in range(args.rounds + 1):
        for side in times:
            limits = every_length if side == "hand_written" else {}
            started = time.perf_counter()
            with SpeedKernels(model, fast_dropout=True, grad_buffer=False, hand_written_max_keys=limits):
                trainer.train(print_steps=0, max_steps=trainer.global_step + args.steps)
            if r > 0:
                times[side].append(time.perf_counter() - started)
    rates = {side: [args.steps / t for t in ts] for side, ts in times.items()}
    paired = statistics.median(s / h for h, s in zip(times["hand_written"], times["sdpa"]))
    return {"precision": trainer.precision, "steps_per_s": {k: statistics.median(v) for k, v in rates.items()},
            "per_round_steps_per_s": rates, "hand_written_over_sdpa_median_of_paired_rounds": paired}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    parser.add_argument("--steps", type=int, default=20, help="training steps per side per round")
    parser.add_argument("--calls", type=int, default=5, help="operator calls per side per round")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per operator batch")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 48, 64, 128, 256, 512])
    args = parse_speed_args(parser)
    print(f"{'dtype':<9}{'length':>7}{'batch':>7}{'sdpa ms':>10}{'hand ms':>10}{'ratio':>8}")
    rows = operator_rows(args)
    training = {precision: training_speed(args, precision) for precision in ("bf16", "fp32")}
    speed = {p: t["steps_per_s"] for p, t in training.items()}
    paired = {p: t["hand_written_over_sdpa_median_of_paired_rounds"] for p, t in training.items()}
    for p in training:
        print(f"ATIS joint, attention dropout 0, {p}: hand-written {speed[p]['hand_written']:.2f} steps/s, "
              f"SDPA {speed[p]['sdpa']:.2f}; median of paired rounds {paired[p]:.2f}")
    path = write_result("attention_speed", {
        "model": MODEL, "data": "random q, k, v (operator); atis train, joint intent + slots, batch 32 (training)",
        "settings": {**vars(args), "heads": HEADS, "head_dim": DIM,
                     "hand_written_max_keys": {str(k): v for k, v in fast.HAND_WRITTEN_MAX_KEYS.items()},
                     "padding": "a quarter of each row's keys masked (operator)"},
        "metrics": {"operator": rows, "training_steps_per_s": speed},
        "baseline": {"name": "transformers' SDPA attention function",
                     "training_steps_per_s": {p: s["sdpa"] for p, s in speed.items()}},
        "ratio": {"training_hand_written_over_sdpa": paired,
                  "operator_sdpa_over_hand_written": {f"{r['dtype']}_{r['length']}": r["sdpa_over_hand_written"]
                                                      for r in rows}},
        "training": training, "load_average": load_average(),
        "notes": "operator: median ms of forward + backward per call; training: rounds alternate the sides in one "
                 "process, the first round of each side is warm-up"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
