"""What each loss balancer costs per training step: ATIS joint intent + slot filling with MiniLM, batch 32,
mtl's defaults, one trainer per balancer (plain sum, uncertainty weighting, DWA, PCGrad) on the same batches.
Rounds alternate between the trainers (round 0 of each is warm-up); the figure is each trainer's median
steps/s and its median ratio to the plain sum over paired rounds. PCGrad runs one backward pass through
the encoder per head (two here) and keeps the encoder's gradients per head.

    python benchmarks/balancer_cost.py --rounds 8 --steps 20 --threads 2
"""
import argparse
import statistics

from common import load_average, parse_speed_args, write_result
from mtl.balancer import DynamicWeightAverage, LossBalancer, PCGrad, UncertaintyWeighting
from overhead import MODEL, atis_reader, joint_trainer, timed

BALANCERS = {"sum": LossBalancer, "uncertainty": UncertaintyWeighting, "dwa": DynamicWeightAverage, "pcgrad": PCGrad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds per balancer, after one warm-up round")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    args = parse_speed_args(parser)
    trainers = {name: joint_trainer(atis_reader(args.seed, 32), args.seed, epochs=10, balancer=make())
                for name, make in BALANCERS.items()}
    times = {name: [] for name in trainers}
    for r in range(args.rounds + 1):
        took = {name: timed(lambda t=t: t.train(print_steps=0, max_steps=t.global_step + args.steps))
                for name, t in trainers.items()}
        for name in times if r > 0 else ():
            times[name].append(took[name])
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: " + ", ".join(
            f"{name} {args.steps / t:.2f} steps/s" for name, t in took.items()), flush=True)
    median = {name: statistics.median(args.steps / t for t in v) for name, v in times.items()}
    ratio = {name: statistics.median(s / t for s, t in zip(times["sum"], v)) for name, v in times.items()}
    print(f"{'balancer':<14}{'median steps/s':>16}{'vs sum':>10}")
    for name in trainers:
        print(f"{name:<14}{median[name]:>16.3f}{ratio[name]:>10.3f}")
    path = write_result("balancer_cost", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32, same batches for every balancer",
        "settings": {**vars(args), "precision": trainers["sum"].precision, "lr": 1e-4},
        "metrics": {f"{name}_steps_per_s": value for name, value in median.items()},
        "baseline": {"name": "plain sum of the head losses", "steps_per_s": median["sum"]},
        "ratio": {f"{name}_over_sum_median_of_paired_rounds": value for name, value in ratio.items()},
        "load_average": load_average(),
        "notes": "ratio < 1 means slower than the plain sum; PCGrad turns the embedding gradient buffer off"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
