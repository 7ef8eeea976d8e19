"""`MultiHeadTrainer(compile=True)` vs the eager defaults: compile time and training speed, fresh processes.

ATIS joint intent + slots with MiniLM, batch 32, mtl's defaults otherwise. Sides: eager (the default: the
CPU kernels on); compiled (`compile=True`: torch.compile of the backbone with dynamic shapes; the gradient
buffer and fast dropout are off under it); compiled with batch widths rounded up to a multiple of 8
(`pad_to_multiple_of=8`, fewer distinct shapes). Each run is a fresh Python process (compiled code and
caches are process-wide): its first `--warmup` steps (the compilation included) are timed apart, then
`--steps` steps. Runs alternate the sides, `--rounds` times.

    python benchmarks/compile_speed.py --rounds 2 --warmup 30 --steps 100 --threads 2
"""
import argparse
import json
import statistics
import time

from common import load_average, parse_speed_args, run_in_child, write_result
from mfu import FlopCount
from overhead import MODEL, atis_reader, joint_trainer

SIDES = {"eager": ({}, {}), "compiled": ({"compile": True}, {}),
         "compiled_pad8": ({"compile": True}, {"pad_to_multiple_of": 8})}
KEYS = ("warmup_seconds", "steps_per_s", "real_tokens_per_s", "padded_tokens_per_s")


def one_run(side: str, args: argparse.Namespace) -> dict:
    """Train one side: seconds of the warm-up steps, then steps/s and real tokens/s of the timed steps."""
    options, load = SIDES[side]
    count = FlopCount()
    trainer = joint_trainer(count.wrap(atis_reader(args.seed, 32, **load)), args.seed, epochs=10, **options)
    started = time.perf_counter()
    trainer.train(print_steps=0, max_steps=args.warmup)
    warmup = time.perf_counter() - started
    real, padded = count.real, count.padded
    started = time.perf_counter()
    result = trainer.train(print_steps=0, max_steps=args.warmup + args.steps)
    seconds = time.perf_counter() - started
    return {"warmup_seconds": warmup, "steps_per_s": args.steps / seconds,
            "real_tokens_per_s": (count.real - real) / seconds,
            "padded_tokens_per_s": (count.padded - padded) / seconds, "steps": result["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=30, help="steps timed apart (compilation included)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps after the warm-up")
    parser.add_argument("--run", choices=list(SIDES), help=argparse.SUPPRESS)  # one run, in a child
    args = parse_speed_args(parser)
    if args.run is not None:
        print(json.dumps(one_run(args.run, args)))
        return
    runs = {side: [] for side in SIDES}
    for r in range(args.rounds):
        for side in SIDES:
            runs[side].append(run_in_child(__file__, "--run", side))
            last = runs[side][-1]
            print(f"round {r} {side:<14} warm-up {last['warmup_seconds']:6.1f} s, {last['steps_per_s']:.2f} steps/s",
                  flush=True)
    median = {side: {k: statistics.median(run[k] for run in rs) for k in KEYS} for side, rs in runs.items()}
    paired = {side: statistics.median(c["steps_per_s"] / e["steps_per_s"] for c, e in zip(rs, runs["eager"]))
              for side, rs in runs.items() if side != "eager"}
    print(f"{'side':<16}{'warm-up s':>11}{'steps/s':>9}{'real tok/s':>12}{'/ eager':>9}")
    for side, m in median.items():
        ratio = m["steps_per_s"] / median["eager"]["steps_per_s"]
        print(f"{side:<16}{m['warmup_seconds']:>11.1f}{m['steps_per_s']:>9.2f}{m['real_tokens_per_s']:>12.0f}"
              f"{ratio:>9.2f}")
    path = write_result("compile_speed", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32",
        "settings": {**vars(args), "sides": {k: {"trainer": o, "load_data": l} for k, (o, l) in SIDES.items()}},
        "metrics": {f"{side}_{k}": v for side, m in median.items() for k, v in m.items()},
        "baseline": {"name": "eager defaults", **median["eager"]},
        "ratio": {f"{side}_steps_per_s_vs_eager_median_of_paired_rounds": v for side, v in paired.items()},
        "per_run": runs, "load_average": load_average(),
        "notes": "each run in a fresh process; medians over rounds; warm-up seconds include the compilation"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
