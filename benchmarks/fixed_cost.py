"""How a training step's time splits into a fixed part and a part that grows with the tokens.

ATIS joint intent + slots with MiniLM, batch 32, bf16 autocast, fused AdamW, mtl's CPU kernels: the
hand-written loop of `overhead.py` (the same work as `MultiHeadTrainer`, within 1%), with its phases timed
by the wall clock, unprofiled: forward (encoder and heads), backward, the gradient norm, and the update (the
clipped AdamW step, the schedule and zero_grad). The same model trains on batches truncated to
`--lengths` tokens per sequence, in rounds that alternate the lengths (the first round is warm-up), with a
large bf16 matrix product timed in each round for the peak. A least-squares line through the median step
times, ms per step = fixed + encoder FLOPs per step / marginal FLOP/s, says what a step costs whatever its
tokens (the intercept: weight casts, the optimizer over every parameter, per-operator work) and how fast the
token-proportional work runs (the slope, against the peak). FLOPs as in `mfu.py`, counting pads (the
encoder computes on them).

    python benchmarks/fixed_cost.py --rounds 8 --steps 20 --threads 2
"""
import argparse
import logging
import statistics
import time

import torch

from common import load_average, parse_speed_args, write_result
from mfu import FlopCount, encoder_flops, matmul_flops
from overhead import MODEL, HandLoop, atis_reader, joint_trainer
from mtl.speed.clipping import clipped_step, gradient_norm

PHASES = ("forward", "backward", "norm", "update")


class PhaseLoop(HandLoop):
    """The hand-written loop with mtl's kernels, timing each phase of a step."""

    def timed_run(self, batches, steps: int) -> dict[str, float]:
        """`steps` updates on `batches`; seconds spent in each phase."""
        spent = dict.fromkeys(PHASES, 0.0)
        for _ in range(steps):
            batch = next(batches)
            started = time.perf_counter()
            loss = self.loss(batch)
            float(loss.detach())  # the trainer reads the loss every step (it waits for the forward pass)
            marks = [started, time.perf_counter()]
            loss.backward()
            marks.append(time.perf_counter())
            norm = float(gradient_norm(self.model))
            marks.append(time.perf_counter())
            clipped_step(self.optimizer, self.model, norm, 1.0)
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            marks.append(time.perf_counter())
            for phase, (a, b) in zip(PHASES, zip(marks, marks[1:])):
                spent[phase] += b - a
        return spent


def fit(flops: list[float], seconds: list[float]) -> tuple[float, float]:
    """(fixed seconds per step, seconds per FLOP) of the least-squares line seconds = fixed + flops * slope."""
    slope, intercept = statistics.linear_regression(flops, seconds)
    return intercept, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    parser.add_argument("--steps", type=int, default=20, help="training steps per length per round")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4, 8, 12, 16, 128],
                        help="max_seqlen of each side (128: ATIS untruncated)")
    parser.add_argument("--size", type=int, default=2048, help="matrix size for the peak")
    args = parse_speed_args(parser)
    logging.getLogger("mtl.components.readers").setLevel(logging.ERROR)  # truncation warnings are the point
    counts = {n: FlopCount() for n in args.lengths}
    readers = {n: counts[n].wrap(atis_reader(args.seed, 32, max_seqlen=n)) for n in args.lengths}
    trainer = joint_trainer(readers[args.lengths[0]], args.seed, epochs=10)
    model = trainer.build_forward()
    total = (args.rounds + 1) * args.steps * len(args.lengths)
    loop = PhaseLoop(model, readers[args.lengths[0]], trainer.precision, total, kernels=True)
    batches = {n: readers[n].batches() for n in args.lengths}
    rows = {n: {"ms_per_step": [], **{p: [] for p in PHASES}, "flops_per_step": [], "real_flops_per_step": [],
                "padded_tokens_per_step": []} for n in args.lengths}
    peaks = []
    for r in range(args.rounds + 1):
        peak = matmul_flops(args.size, torch.bfloat16, 5)
        line = []
        for n in args.lengths:
            before = counts[n].snapshot()
            spent = loop.timed_run(batches[n], args.steps)
            real, padded, _, sq_real, sq_padded = (a - b for a, b in zip(counts[n].snapshot(), before))
            step_ms = 1000 * sum(spent.values()) / args.steps
            line.append(f"{n}: {step_ms:.1f} ms/step")
            if r == 0:
                continue
            row = rows[n]
            row["ms_per_step"].append(step_ms)
            for phase in PHASES:
                row[phase].append(1000 * spent[phase] / args.steps)
            row["flops_per_step"].append(encoder_flops(model, padded, sq_padded) / args.steps)
            row["real_flops_per_step"].append(encoder_flops(model, real, sq_real) / args.steps)
            row["padded_tokens_per_step"].append(padded / args.steps)
        if r > 0:
            peaks.append(peak)
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: peak {peak / 1e9:.0f} GFLOP/s; " + ", ".join(line),
              flush=True)
    median = {n: {k: statistics.median(v) for k, v in row.items()} for n, row in rows.items()}
    peak = statistics.median(peaks)
    fixed, slope = fit([m["flops_per_step"] for m in median.values()],
                       [m["ms_per_step"] / 1000 for m in median.values()])
    rate = 1 / slope
    by_phase = {p: 1000 * fit([m["flops_per_step"] for m in median.values()],
                              [m[p] / 1000 for m in median.values()])[0] for p in PHASES}
    full = median[max(args.lengths)]
    matmul_bound_ms = 1000 * full["flops_per_step"] / peak
    share = 1000 * fixed / full["ms_per_step"]
    mfu = full["real_flops_per_step"] / (full["ms_per_step"] / 1000) / peak
    mfu_without_fixed = full["real_flops_per_step"] / (full["ms_per_step"] / 1000 - fixed) / peak
    print(f"{'max_seqlen':>10}{'tokens/step':>13}{'ms/step':>9}" + "".join(f"{p:>10}" for p in PHASES))
    for n, m in median.items():
        print(f"{n:>10}{m['padded_tokens_per_step']:>13.0f}{m['ms_per_step']:>9.1f}"
              + "".join(f"{m[p]:>10.1f}" for p in PHASES))
    print(f"fixed cost {1000 * fixed:.1f} ms/step ({100 * share:.0f}% of a full-length step); marginal rate "
          f"{rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of the {peak / 1e9:.0f} GFLOP/s bf16 peak; "
          f"full length: MFU {100 * mfu:.1f}%, {100 * mfu_without_fixed:.1f}% without the fixed cost")
    print("fixed ms/step by phase: " + ", ".join(f"{p} {ms:.1f}" for p, ms in by_phase.items())
          + f"; the encoder's FLOPs of a full-length step at the peak: {matmul_bound_ms:.1f} ms")
    path = write_result("fixed_cost", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32, sequences truncated to max_seqlen",
        "settings": {**vars(args), "precision": trainer.precision, "loop": "overhead.py's hand-written loop "
                     "with mtl's CPU kernels, phases timed by the wall clock"},
        "metrics": {"fixed_ms_per_step": 1000 * fixed, "fixed_share_of_full_step": share,
                    "marginal_gflops": rate / 1e9, "marginal_share_of_peak": rate / peak,
                    "fixed_ms_per_step_by_phase": by_phase, "full_length_ms_at_peak": matmul_bound_ms,
                    "bf16_peak_gflops": peak / 1e9, "full_length_mfu_percent_real_tokens": 100 * mfu,
                    "full_length_mfu_percent_without_fixed_cost": 100 * mfu_without_fixed},
        "per_length_median": {str(n): m for n, m in median.items()},
        "per_round": {str(n): row for n, row in rows.items()}, "peak_per_round_gflops": [p / 1e9 for p in peaks],
        "baseline": {"bf16_matmul_peak_gflops": peak / 1e9},
        "ratio": {"fixed_share_of_full_step": share},
        "formula": "ms_per_step = fixed + flops_per_step / marginal rate, least squares over the lengths' "
                   "medians; FLOPs as in mfu.py, counting pads; MFU on real tokens",
        "load_average": load_average(),
        "notes": "forward: encoder and heads under autocast, loss read; update: clipped fused AdamW step, "
                 "schedule, zero_grad"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
