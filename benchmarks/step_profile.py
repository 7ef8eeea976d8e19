"""Where a training step's time goes: torch.profiler over mtl's defaults and over torch's own kernels.

ATIS joint intent + slots with MiniLM, batch 32, `precision="auto"`. Two trainers on the same batches:
mtl's defaults (word-embedding gradient buffer, fast dropout) and the same with both switched off. Each
profiles `--steps` steps after `--warmup` unprofiled ones; operators' self CPU time is summed into groups
(matrix products, casts, zero fills, dropout masks, the AdamW update, the gradient norm, the rest) and
divided by the steps; minor page faults per step come from getrusage over the same steps. Profiling slows
a step down, so the groups' shares matter here, not the absolute times (see overhead.py and mfu.py).

    python benchmarks/step_profile.py --steps 20 --threads 2
"""
import argparse

from torch.profiler import ProfilerActivity, profile

from common import load_average, page_faults, parse_speed_args, write_result
from overhead import MODEL, atis_reader, joint_trainer

GROUPS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
          "casts (bf16 <-> fp32)": ("aten::copy_",),
          "zero fills": ("aten::fill_", "aten::zero_"),
          "dropout masks": ("aten::bernoulli_", "aten::random_"),
          "AdamW update": ("aten::_fused_adamw_",),
          "gradient norm": ("aten::linalg_vector_norm",)}
SIDES = {"mtl defaults": {}, "torch kernels": {"embedding_grad_buffer": False, "fast_dropout": False}}


def profile_steps(trainer, steps: int) -> tuple[dict[str, float], float]:
    """Milliseconds of self CPU time per step by group, and minor page faults per step."""
    faults = page_faults()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train(print_steps=0, max_steps=trainer.global_step + steps)
    faults = (page_faults() - faults) / steps
    times = {event.key: event.self_cpu_time_total / 1000 / steps for event in prof.key_averages()}
    grouped = {group: sum(times.get(name, 0.0) for name in names) for group, names in GROUPS.items()}
    grouped["the rest"] = sum(times.values()) - sum(grouped.values())
    grouped["total"] = sum(times.values())
    return grouped, faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parse_speed_args(parser)
    trainers = {side: joint_trainer(atis_reader(args.seed, 32), args.seed, 10, **options)
                for side, options in SIDES.items()}
    for trainer in trainers.values():
        trainer.train(print_steps=0, max_steps=args.warmup)
    results = {side: profile_steps(trainer, args.steps) for side, trainer in trainers.items()}
    print(f"{'ms per step (self CPU)':<26}" + "".join(f"{side:>16}" for side in SIDES))
    for group in [*GROUPS, "the rest", "total"]:
        print(f"{group:<26}" + "".join(f"{results[side][0][group]:>16.1f}" for side in SIDES))
    print(f"{'page faults per step':<26}" + "".join(f"{results[side][1]:>16.0f}" for side in SIDES))
    base, ours = results["torch kernels"][0]["total"], results["mtl defaults"][0]["total"]
    path = write_result("step_profile", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32, the same batches on both sides",
        "settings": {**vars(args), "sides": SIDES, "groups": GROUPS,
                     "precision": trainers["mtl defaults"].precision},
        "metrics": {side: {"ms_per_step": r[0], "page_faults_per_step": r[1]} for side, r in results.items()},
        "baseline": {"name": "torch kernels", "ms_per_step": base},
        "ratio": {"profiled_step_time_torch_kernels_over_defaults": base / ours},
        "load_average": load_average(),
        "notes": "self CPU time under torch.profiler (which slows steps down); shares, not absolute speed"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
