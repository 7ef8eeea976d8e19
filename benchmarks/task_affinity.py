"""Task affinity against the truth: the estimates of one all-tasks run, checked against every pair trained.

Six tasks over MiniLM-L6, each a reader and its heads: ATIS intents, ATIS slots, SNIPS joint intent + slots,
CoNLL-2003 NER, SST-2 and MRPC. At one budget (`--steps-per-task` steps of batch 32 for every task in a run,
mix ratios equal, no model selection: each run's final model is scored once on each task's test split, dev
for the GLUE tasks, whose test labels are not public) for each seed:
  - every task alone, and every pair of tasks trained together;
  - the gain of each pair member over its single-task run (points of its `score`: the main metric of a
    one-head task; for SNIPS the mean of intent accuracy, slot F1 and sentence accuracy);
  - one run of all tasks together with the estimate on (every `--affinity-every` steps, `--probe-size`
    examples per task): the first-order lookahead (TAG) and gradient-cosine matrices averaged over the run,
    and every `--exact-every` steps the exact lookahead beside the first-order one on the same batches.
Then: Spearman correlation between each estimate's Z(i -> j) and the measured gain of j when trained with i
(and between the first-order and the exact lookahead where both were taken, and between the gains measured
with one seed and with another: how far the truth itself repeats);
the grouping the estimate suggests (at most `--max-groups` groups) scored as the mean over tasks of each
task's score in its group's run (pairs and singles measured; larger groups trained here), against all
tasks together and all apart; and the estimate's cost as a fraction of the all-tasks run and of the
exhaustive runs' training (both timed inside the all-tasks run: see `costs`; the exact checks apart).
Every run is kept in results/runs/task_affinity/ (`--resume` skips it). Writes results/task_affinity.json.

    python benchmarks/task_affinity.py --seeds 1 2 --steps-per-task 600 --resume
"""
import argparse
import importlib.util
import itertools
import json
import logging
import time

import numpy as np
import torch

import mtl
from common import DATA, RESULTS, RunStore, mean_std, minilm_dir, write_result
from mtl.trainers.affinity import AffinityEstimator, mean_matrix
from mtl.trainers.task_groups import best_grouping

TASKS = ("atis_intent", "atis_slots", "snips", "conll", "sst2", "mrpc")
CACHE = RESULTS / "runs" / "task_affinity" / "features"  # tokenized once per data set and settings


def build_task(name: str, seed: int, max_seqlen: int = 64) -> tuple["mtl.Trainer", object]:
    """Task `name`: its training task and its test reader."""
    model = minilm_dir()
    if name in ("atis_intent", "atis_slots", "snips"):
        folder = DATA / name.split("_")[0]
        reader = mtl.reader.IntentSlotReader(model, max_seqlen, seed=seed).load_data(folder / "train", cache_dir=CACHE)
        heads = mtl.head.intent_slot_heads(reader, 384, 0.1, sentence_vector="cls", slot_loss_coef=3.0)
        keep = {"atis_intent": ("intent",), "atis_slots": ("slots",), "snips": ("intent", "slots")}[name]
        return mtl.Trainer(name, reader=reader, head={h: heads[h] for h in keep}), reader.eval_reader(folder / "test")
    if name == "conll":
        reader = mtl.reader.SequenceLabelReader(model, max_seqlen, label_map="auto", seed=seed)
        reader.load_data(DATA / "conll2003_en" / "train.txt", file_format="conll", cache_dir=CACHE)
        head = mtl.head.SequenceLabel(len(reader.label_names["label_ids"]), 384, 0.1)
        return mtl.Trainer(name, reader=reader, head=head), reader.eval_reader(DATA / "conll2003_en" / "test.txt",
                                                                             file_format="conll")
    files = glue_files(name)
    if name == "sst2":
        reader = mtl.reader.ClassifyReader(model, max_seqlen, seed=seed).load_data(files["train"], cache_dir=CACHE)
        head = mtl.head.Classify(2, 384, 0.1)
    else:
        reader = mtl.reader.MatchReader(model, max_seqlen, seed=seed, learning_strategy="pointwise")
        reader.load_data(files["train"], cache_dir=CACHE)
        head = mtl.head.Match(2, 384, 0.1)
    return mtl.Trainer(name, reader=reader, head=head), reader.eval_reader(files["dev"])


def glue_files(name: str) -> dict:
    """The examples' own GLUE -> PALM conversion, written once under results/runs/task_affinity/data."""
    path = {"sst2": "classification/sst2.py", "mrpc": "matching/mrpc.py"}[name]
    spec = importlib.util.spec_from_file_location(name, RESULTS.parents[1] / "examples" / path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.prepare(out=RESULTS / "runs" / "task_affinity" / "data" / name)


def train(names: tuple[str, ...], seed: int, args: argparse.Namespace, affinity: bool = False) -> dict:
    """One run of `names` together; each task's test metrics (and the affinity matrices when asked)."""
    torch.manual_seed(seed)
    built = [build_task(name, seed) for name in names]
    tasks, tests = [b[0] for b in built], {b[0].name: b[1] for b in built}
    reference = tasks[0].reader
    epochs = args.steps_per_task * reference.batch_size / reference.num_examples  # steps of the reference task
    trainer = mtl.MultiHeadTrainer(tasks, backbone=mtl.backbone.BERT.from_pretrained(minilm_dir()), lr=args.lr,
                                   num_epochs=epochs, seed=seed)
    if affinity:
        trainer.affinity = AffinityEstimator(args.affinity_every, args.probe_size, args.exact_every)
    started = time.perf_counter()
    result = trainer.train(print_steps=0)
    seconds = time.perf_counter() - started
    scores = trainer.evaluate(tests)
    record = {"tasks": list(names), "seed": seed, "steps": result["steps"], "train_seconds": round(seconds, 1),
              "precision": trainer.precision, "test": scores,
              "main": {name: scores[name]["score"] for name in names}}
    if trainer.affinity is not None:
        estimator, exact = trainer.affinity, [h for h in trainer.affinity.history if "tag_exact" in h]
        record.update(tag=estimator.tag, grad_cosine=estimator.cosine, tag_exact=estimator.tag_exact,
                      tag_at_exact=mean_matrix([h["tag"] for h in exact]), estimates=len(estimator.history),
                      exact_estimates=len(exact), affinity_seconds=round(estimator.seconds, 1),
                      exact_seconds=round(estimator.exact_seconds, 1), estimator=estimator_settings(args))
    print(f"{'+'.join(names)} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in record["main"].items())
          + f"; {seconds:.0f}s", flush=True)
    return record


def estimator_settings(args: argparse.Namespace) -> dict:
    return {"every": args.affinity_every, "probe_size": args.probe_size, "exact_every": args.exact_every}


def run(store: RunStore, names: tuple[str, ...], seed: int, args: argparse.Namespace, **options) -> dict:
    key = f"{'+'.join(names)}-seed{seed}" + ("-affinity" if options else "")
    stored = store.load(key)
    if args.resume and stored is not None and (not options or stored.get("estimator") == estimator_settings(args)):
        return stored
    record = train(names, seed, args, **options)
    store.save(key, record)
    return record


def spearman(x: list[float], y: list[float]) -> float:
    rank = lambda values: np.argsort(np.argsort(values)).astype(float)  # noqa: E731 - no ties expected
    return float(np.corrcoef(rank(np.array(x)), rank(np.array(y)))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--steps-per-task", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--affinity-every", type=int, default=100, help="steps between two estimates")
    parser.add_argument("--probe-size", type=int, default=16, help="examples per task in an estimate")
    parser.add_argument("--exact-every", type=int, default=500, help="steps between two exact lookaheads")
    parser.add_argument("--max-groups", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    store, names = RunStore("task_affinity"), tuple(args.tasks)
    singles = {(n, s): run(store, (n,), s, args) for n in names for s in args.seeds}
    pairs = {(p, s): run(store, p, s, args) for p in itertools.combinations(names, 2) for s in args.seeds}
    together = [run(store, names, s, args, affinity=True) for s in args.seeds]
    alone = {n: mean_std([singles[(n, s)]["main"][n] for s in args.seeds])[0] for n in names}
    gain = {(i, j): mean_std([pairs[(tuple(sorted((i, j), key=names.index)), s)]["main"][j] for s in args.seeds])[0]
            - alone[j] for i in names for j in names if i != j}
    estimates = {kind: mean_matrix([r[kind] for r in together]) for kind in ("tag", "grad_cosine", "tag_exact")
                 if all(r[kind] for r in together)}
    ordered = sorted(gain)
    per_seed = {s: [pairs[(tuple(sorted((i, j), key=names.index)), s)]["main"][j] - singles[(j, s)]["main"][j]
                    for i, j in ordered] for s in args.seeds}
    metrics = {f"spearman.{kind}": round(spearman([estimates[kind][i][j] for i, j in ordered],
                                                  [gain[(i, j)] for i, j in ordered]), 3) for kind in estimates}
    if len(args.seeds) > 1:  # how far the truth itself repeats: the ceiling of any estimate's correlation
        metrics["spearman.gain_seed_to_seed"] = round(float(np.mean(
            [spearman(per_seed[a], per_seed[b]) for a, b in itertools.combinations(args.seeds, 2)])), 3)
    if all(r["tag_exact"] for r in together):  # a run shorter than --exact-every has none
        metrics["lookahead.first_order_vs_exact_spearman"] = round(float(np.mean([spearman(
            [r["tag_at_exact"][i][j] for i, j in ordered], [r["tag_exact"][i][j] for i, j in ordered])
            for r in together])), 3)
    groups, _ = best_grouping(estimates["tag"], args.max_groups)
    metrics.update(grouping_scores(store, groups, names, singles, pairs, together, args))
    metrics.update(costs(together, [*singles.values(), *pairs.values()], len(args.seeds)))
    write_result("task_affinity", {
        "tasks": list(names), "settings": vars(args), "metrics": metrics, "suggested_groups": groups,
        "estimates": estimates, "measured_gain": {f"{i}->{j}": round(v, 3) for (i, j), v in gain.items()},
        "measured_gain_per_seed": {str(s): {f"{i}->{j}": round(v, 3) for (i, j), v in zip(ordered, g)}
                                   for s, g in per_seed.items()},
        "alone": alone, "precisions": sorted({r["precision"] for r in [*singles.values(), *together]})})
    print(json.dumps(metrics, indent=1))


def costs(together: list[dict], exhaustive: list[dict], seeds: int) -> dict[str, float]:
    """The estimate's cost against one all-tasks run, and against the exhaustive single and pair runs. Both
    are timed inside the all-tasks run itself (its seconds per plain training step, the estimate's seconds):
    runs timed apart on a shared machine would compare the machine's load, not the work. The exhaustive runs
    are costed at the all-tasks run's mean step time (every task has the same number of steps in them)."""
    step = [(r["train_seconds"] - r["affinity_seconds"]) / r["steps"] for r in together]
    exhaustive_steps = sum(r["steps"] for r in exhaustive) / seeds
    estimate = [r["affinity_seconds"] - r["exact_seconds"] for r in together]  # the exact checks apart
    return {"cost.fraction_of_run": round(float(np.mean([e / (r["train_seconds"] - r["affinity_seconds"])
                                                         for e, r in zip(estimate, together)])), 4),
            "cost.fraction_of_exhaustive": round(float(np.mean([e / (exhaustive_steps * s)
                                                                for e, s in zip(estimate, step)])), 4),
            "cost.exact_fraction_of_run": round(float(np.mean([r["exact_seconds"] / (r["train_seconds"]
                                                                                    - r["affinity_seconds"])
                                                               for r in together])), 4),
            "cost.exhaustive_wall_seconds": round(sum(r["train_seconds"] for r in exhaustive), 1)}


def grouping_scores(store: RunStore, groups: list, names: tuple, singles: dict, pairs: dict, together: list,
                    args: argparse.Namespace) -> dict[str, float]:
    """Mean over tasks of each task's main metric in its group's run: suggested, all together, all apart."""
    def group_run(group: tuple, seed: int) -> dict:
        if len(group) == 1:
            return singles[(group[0], seed)]
        if len(group) == 2:
            return pairs[(group, seed)]
        if len(group) == len(names):
            return next(r for r in together if r["seed"] == seed)
        return run(store, group, seed, args)

    def score(partition: list[tuple]) -> float:
        per_seed = [np.mean([group_run(g, s)["main"][n] for g in partition for n in g]) for s in args.seeds]
        return round(float(np.mean(per_seed)), 2)
    suggested = [tuple(sorted(g, key=names.index)) for g in groups]
    return {"grouping.suggested.mean_score": score(suggested),
            "grouping.all_together.mean_score": score([names]),
            "grouping.all_separate.mean_score": score([(n,) for n in names])}


if __name__ == "__main__":
    main()
