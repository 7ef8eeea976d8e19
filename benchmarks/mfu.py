"""Model FLOP utilization: the encoder's training FLOP/s under mtl's defaults over this machine's bf16 matmul peak.

The peak is measured in the same process, in rounds alternating with the training rounds: a large square
bf16 matrix product (and fp32, for reference). Training is ATIS joint intent + slots with MiniLM, batch 32,
mtl's defaults. FLOPs count only real (non-pad) tokens:

    FLOPs = 6 * P * T  +  12 * n_layers * d * sum_i(L_i ** 2)

P: the encoder layers' parameters (no embeddings, no pooler, no heads); T: real tokens; L_i: real length of
sequence i; d: hidden size. 6 = forward (2) + backward (4) per parameter per token; 12 * d * L^2 per layer =
forward QK^T and AV (2 * 2 * L^2 * d) times 3 for the backward. MFU = achieved / bf16 peak (medians of rounds).

    python benchmarks/mfu.py --rounds 5 --steps 20 --threads 1
"""
import argparse
import statistics
import time

import torch

from common import load_average, parse_speed_args, write_result
from overhead import MODEL, TokenCount, atis_reader, joint_trainer


class FlopCount(TokenCount):
    """Also sums squared real lengths (the attention term) and squared padded widths."""

    def __init__(self) -> None:
        super().__init__()
        self.sq_real, self.sq_padded = 0, 0

    def wrap(self, reader):
        collate = super().wrap(reader).collate

        def counted(features: list) -> dict:
            batch = collate(features)
            lengths = batch["attention_mask"].sum(1)
            self.sq_real += int((lengths ** 2).sum())
            self.sq_padded += batch["input_ids"].shape[0] * batch["input_ids"].shape[1] ** 2
            return batch
        reader.collate = counted
        return reader

    def snapshot(self) -> tuple[int, ...]:
        return super().snapshot() + (self.sq_real, self.sq_padded)


def matmul_flops(size: int, dtype: torch.dtype, reps: int, device: str = "cpu") -> float:
    """FLOP/s of `reps` products of two size x size matrices (after one untimed product)."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    torch.mm(a, b)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - started)


def synchronize(device: str) -> None:
    """Wait for a GPU's queued work, so that host clocks time it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def encoder_flops(model: torch.nn.Module, tokens: int, squared_lengths: int) -> float:
    """Training FLOPs of the encoder layers (module docstring's formula) for `tokens` tokens whose sequences'
    squared lengths sum to `squared_lengths`."""
    config = model.backbone.config
    params = sum(p.numel() for p in model.backbone.model.encoder.parameters())
    return 6 * params * tokens + 12 * config.num_hidden_layers * config.hidden_size * squared_lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--size", type=int, default=2048, help="matrix size for the peak")
    parser.add_argument("--reps", type=int, default=5)
    args = parse_speed_args(parser)
    count = FlopCount()
    trainer = joint_trainer(count.wrap(atis_reader(args.seed, 32)), args.seed, 10)
    model = trainer.build_forward()
    config = model.backbone.config
    params = sum(p.numel() for p in model.backbone.model.encoder.parameters())
    layers, hidden = config.num_hidden_layers, config.hidden_size
    rows = {"bf16_peak": [], "fp32_peak": [], "achieved_real": [], "achieved_padded": [], "real_tokens_per_s": []}
    for r in range(args.rounds + 1):
        bf16 = matmul_flops(args.size, torch.bfloat16, args.reps)
        fp32 = matmul_flops(args.size, torch.float32, max(1, args.reps // 2))
        before = count.snapshot()
        started = time.perf_counter()
        trainer.train(print_steps=0, max_steps=trainer.global_step + args.steps)
        seconds = time.perf_counter() - started
        real, padded, _, sq_real, sq_padded = (a - b for a, b in zip(count.snapshot(), before))
        achieved = encoder_flops(model, real, sq_real) / seconds
        achieved_padded = encoder_flops(model, padded, sq_padded) / seconds
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: peak bf16 {bf16 / 1e9:.0f} GFLOP/s, fp32 {fp32 / 1e9:.0f}; "
              f"training {achieved / 1e9:.1f} GFLOP/s on real tokens ({achieved_padded / 1e9:.1f} counting pads), "
              f"{real / seconds:.0f} real tok/s", flush=True)
        if r > 0:
            for key, value in zip(rows, (bf16, fp32, achieved, achieved_padded, real / seconds)):
                rows[key].append(value)
    median = {k: statistics.median(v) for k, v in rows.items()}
    mfu = 100 * median["achieved_real"] / median["bf16_peak"]
    mfu_padded = 100 * median["achieved_padded"] / median["bf16_peak"]
    print(f"{'quantity':<34}{'median':>12}")
    for key, value in median.items():
        print(f"{key:<34}{value / (1 if key == 'real_tokens_per_s' else 1e9):>12.1f}")
    print(f"MFU (real tokens) {mfu:.1f}%   counting pads {mfu_padded:.1f}%   (goal >= 50%)")
    path = write_result("mfu", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32, mtl defaults",
        "settings": {**vars(args), "precision": trainer.precision, "encoder_layer_params": params,
                     "layers": layers, "hidden": hidden},
        "formula": "6 * encoder_layer_params * real_tokens + 12 * layers * hidden * sum(real_length ** 2); "
                   "MFU = median achieved FLOP/s / median bf16 peak FLOP/s",
        "metrics": {"mfu_percent_real_tokens": mfu, "mfu_percent_padded_tokens": mfu_padded,
                    "achieved_gflops_real_tokens": median["achieved_real"] / 1e9,
                    "achieved_gflops_padded_tokens": median["achieved_padded"] / 1e9,
                    "bf16_peak_gflops": median["bf16_peak"] / 1e9, "fp32_peak_gflops": median["fp32_peak"] / 1e9,
                    "bf16_peak_gflops_best_round": max(rows["bf16_peak"]) / 1e9,
                    "real_tokens_per_s": median["real_tokens_per_s"]},
        "per_round": rows, "baseline": {"bf16_matmul_peak_gflops": median["bf16_peak"] / 1e9},
        "ratio": {"mfu": median["achieved_real"] / median["bf16_peak"]},
        "goal": {"mfu_percent": 50, "met": mfu >= 50}, "load_average": load_average(),
        "notes": f"peak: {args.size}x{args.size} matrix products, measured in rounds alternating with training"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
