"""Distillation on ATIS or SNIPS joint intent + slots: students against the same models trained directly.

Two comparisons, every run kept in results/runs/distill_<data>/ (`--resume` skips it):
  student     MPNet-base teacher (benchmarks/base_encoder.py's model of the same seed, at its chosen lr)
              -> MiniLM-L6 student, against MiniLM-L6 trained directly (results/runs/<data>_joint/, the
              same seeds: paired differences)
  l3_student  MiniLM-L6 trained directly (re-run here and kept as a model folder) -> a 3-layer student
              (MiniLM's layers 0, 2, 4), against the same 3-layer model fine-tuned directly
  unlabelled  does text without labels help a student? A fixed tenth of the training set (drawn with seed 0)
              keeps its labels, the other nine tenths are text alone. An MPNet-base teacher trained on the tenth
              (up to 20 epochs, early stopping) teaches MiniLM-L6 on the tenth, with and without the unlabelled
              text (a task without labels sharing the heads, labelled by the teacher alone), against MiniLM-L6
              trained directly on the tenth; the students at the direct recipe's lr.
(Serving speed, and the picture of accuracy against it: benchmarks/distill_speed.py, on the folders kept here.)
The MPNet student's (alpha, temperature) is `--alpha`/`--temperature`, or the pair of `--soft-grid` best on dev
(first seed, at the student's chosen lr). Students and 3-layer models use the direct MiniLM recipe
(results/<data>_joint.json: up to 20 epochs, early stopping with patience 3 on dev, the best dev model tested
once), their lr picked on dev with the first seed among `--lrs`, a grid extended past its end while the best
sits there (common.search_lr). The teacher labels each training set once (cached, memory-mapped).
Writes results/distill_intent_slot.json, merging the data sets already measured: `metrics` nested as data
set -> model -> metric, and `ratio` (student over teacher, l3_student over its teacher) the same way.

    python benchmarks/distill.py --data atis --seeds 1 2 3 --resume
"""
import argparse
import json
import logging
import random

import torch

from common import DATA, RESULTS, RunStore, mean_std, paired_difference, search_lr, write_result
from intent_slot_runs import run_or_load

KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")
FRACTION = 0.1  # the labelled share of the training set in the `unlabelled` part
LAYERS = [0, 2, 4]


def direct_settings(data: str) -> dict:
    """The direct MiniLM recipe and its chosen lr (results/<data>_joint.json)."""
    chosen = json.loads((RESULTS / f"{data}_joint.json").read_text(encoding="utf-8"))["settings"]
    return {k: v for k, v in chosen.items() if k != "lr_candidates"}


def teacher_folder(data: str, seed: int) -> str:
    """The MPNet model of `seed` at base_encoder.py's chosen lr, relative to results/."""
    base = json.loads((RESULTS / f"{data}_joint_mpnet.json").read_text(encoding="utf-8"))
    lr, scale = base["chosen_lr"], base["settings"]["head_lr_scale"]
    return f"runs/{data}_joint_mpnet/models/joint-lr{lr:g}-head{scale:g}x-seed{seed}"


def lr_then_seeds(store: RunStore, name: str, args: argparse.Namespace, settings, export: bool = False) -> list:
    """The lr picked on dev with the first seed, then every seed at it; `settings(seed)` gives a run's."""
    first = args.seeds[0]
    scores = search_lr(lambda lr: run_or_load(store, f"{name}-lr{lr:g}-seed{first}", args.data, "joint", first,
                                              {**settings(first), "lr": lr}, args.resume, export)["best_dev"]["score"],
                       args.lrs)
    lr = max(scores, key=scores.get)
    runs = [run_or_load(store, f"{name}-lr{lr:g}-seed{seed}", args.data, "joint", seed,
                        {**settings(seed), "lr": lr}, args.resume, export) for seed in args.seeds]
    for run in runs:
        run["lr_search"] = {f"{k:g}": v for k, v in sorted(scores.items())}
    return runs


def soft_search(store: RunStore, args: argparse.Namespace, direct: dict, students: list[dict]) -> list[dict]:
    """The student runs at the (alpha, temperature) pair best on dev with the first seed: `--alpha` /
    `--temperature` (the runs given) or a pair of `--soft-grid`, each tried at the lr chosen for the first."""
    lr, first = students[0]["settings"]["lr"], args.seeds[0]

    def run(alpha: float, temperature: float, seed: int) -> dict:
        settings = {**direct, "lr": lr, "alpha": alpha, "temperature": temperature,
                    "teacher": teacher_folder(args.data, seed)}
        return run_or_load(store, f"student-a{alpha:g}-t{temperature:g}-lr{lr:g}-seed{seed}", args.data, "joint",
                           seed, settings, args.resume)
    pairs = [tuple(float(x) for x in pair.split(":")) for pair in args.soft_grid]
    scores = {(args.alpha, args.temperature): students[0]["best_dev"]["score"]}
    scores.update({pair: run(*pair, first)["best_dev"]["score"] for pair in pairs})
    best = max(scores, key=scores.get)
    chosen = students if best == (args.alpha, args.temperature) else [run(*best, seed) for seed in args.seeds]
    for record in chosen:
        record["soft_search"] = {f"{a:g}:{t:g}": score for (a, t), score in scores.items()}
    return chosen


def summary(runs: list[dict]) -> dict:
    values = {k: [r["test"][k] for r in runs] for k in KEYS}
    return {"metrics": {k: round(mean_std(v)[0], 2) for k, v in values.items()},
            "std": {k: round(mean_std(v)[1], 2) for k, v in values.items()}, "per_seed": values,
            "lr": runs[0]["settings"]["lr"], "lr_search": runs[0].get("lr_search"),
            "alpha": runs[0]["settings"]["alpha"], "temperature": runs[0]["settings"]["temperature"],
            "soft_search": runs[0].get("soft_search"),
            "precisions": [r.get("precision") for r in runs], "best_epochs": [r["best_epoch"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("atis", "snips"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 2e-4])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--soft-grid", nargs="+", default=[], metavar="ALPHA:T",
                        help="other (alpha, temperature) pairs for the MPNet student, tried on dev with the first "
                             "seed at the student's chosen lr; the best on dev is run with every seed")
    parser.add_argument("--parts", nargs="+", choices=("student", "l3_student", "unlabelled"),
                        default=["student", "l3_student"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    store, direct = RunStore(f"distill_{args.data}"), direct_settings(args.data)
    soft = {"alpha": args.alpha, "temperature": args.temperature}
    models: dict[str, dict] = {}
    if "student" in args.parts:
        students = lr_then_seeds(store, "student", args, lambda seed: {
            **direct, **soft, "teacher": teacher_folder(args.data, seed)})
        models["student"] = summary(soft_search(store, args, direct, students))
        models["direct"] = summary([RunStore(f"{args.data}_joint").load(f"joint-lr{direct['lr']:g}-seed{s}")
                                    for s in args.seeds])
        models["teacher"] = summary([RunStore(f"{args.data}_joint_mpnet").load(teacher_folder(args.data, s)
                                                                               .rsplit("/", 1)[1])
                                     for s in args.seeds])
    if "l3_student" in args.parts:
        teachers = [run_or_load(store, f"direct6-seed{seed}", args.data, "joint", seed, direct, args.resume, True)
                    for seed in args.seeds]
        models["direct6"] = summary(teachers)
        models["l3_direct"] = summary(lr_then_seeds(store, "l3-direct", args, lambda seed: {**direct,
                                                                                           "layers": LAYERS}))
        models["l3_student"] = summary(lr_then_seeds(store, "l3-student", args, lambda seed: {
            **direct, **soft, "layers": LAYERS,
            "teacher": f"runs/distill_{args.data}/models/direct6-seed{seed}"}, export=True))  # timed by distill_speed
    if "unlabelled" in args.parts:
        models.update(unlabelled_part(store, args, direct, soft))
    write(args, models)


def subset(data: str) -> tuple[str, str]:
    """A fixed random tenth of the training set as a labelled folder, the other texts as a text file (under
    results/runs/distill_<data>/data/; relative to results/)."""
    out = RESULTS / "runs" / f"distill_{data}" / "data"
    if not (out / "unlabelled.txt").is_file():
        rows = {name: (DATA / data / "train" / name).read_text(encoding="utf-8").splitlines()
                for name in ("seq.in", "seq.out", "label")}
        order = list(range(len(rows["seq.in"])))
        random.Random(0).shuffle(order)
        cut = round(FRACTION * len(order))
        (out / "labelled").mkdir(parents=True, exist_ok=True)
        for name, lines in rows.items():
            (out / "labelled" / name).write_text("".join(lines[i] + "\n" for i in sorted(order[:cut])),
                                                 encoding="utf-8")
        (out / "unlabelled.txt").write_text("".join(rows["seq.in"][i] + "\n" for i in sorted(order[cut:])),
                                            encoding="utf-8")
    base = f"runs/distill_{data}/data"
    return f"{base}/labelled", f"{base}/unlabelled.txt"


def unlabelled_part(store: RunStore, args: argparse.Namespace, direct: dict, soft: dict) -> dict[str, dict]:
    labelled, texts = subset(args.data)
    mpnet = json.loads((RESULTS / f"{args.data}_joint_mpnet.json").read_text(encoding="utf-8"))
    teacher = {k: v for k, v in mpnet["settings"].items() if k not in ("lr_candidates", "head_lr_scale")}
    teacher.update(epochs=20, patience=3, train_folder=labelled)
    small = {**direct, "train_folder": labelled}
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:
        folder = f"runs/distill_{args.data}/models/teacher10-seed{seed}"
        runs.setdefault("teacher10", []).append(
            run_or_load(store, f"teacher10-seed{seed}", args.data, "joint", seed, teacher, args.resume, True))
        for name, extra in (("direct10", {}), ("student10", {**soft, "teacher": folder}),
                            ("student10_unlabelled", {**soft, "teacher": folder, "unlabelled": texts})):
            runs.setdefault(name, []).append(run_or_load(store, f"{name}-seed{seed}", args.data, "joint", seed,
                                                         {**small, **extra}, args.resume))
    return {name: summary(records) for name, records in runs.items()}


def write(args: argparse.Namespace, models: dict[str, dict]) -> None:
    """Merge this data set's models into results/distill_intent_slot.json and print them."""
    path = RESULTS / "distill_intent_slot.json"
    kept = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    metrics, details, ratio = kept.get("metrics", {}), kept.get("details", {}), kept.get("ratio", {})
    printed, models = models, {**details.get(args.data, {}), **models}  # the parts run now, over those kept
    metrics[args.data] = {name: model["metrics"] for name, model in models.items()}
    details[args.data] = models
    pairs = {"student": "teacher", "l3_student": "direct6"}
    ratio[args.data] = {name: {k: round(models[name]["metrics"][k] / models[of]["metrics"][k], 4) for k in KEYS}
                        for name, of in pairs.items() if name in models and of in models}
    paired = {f"{a}-{b}": {k: paired_difference(models[a]["per_seed"][k], models[b]["per_seed"][k]) for k in KEYS}
              for a, b in (("student", "direct"), ("l3_student", "l3_direct"), ("student10", "direct10"),
                           ("student10_unlabelled", "student10"), ("student10_unlabelled", "direct10"))
              if a in models and b in models}
    write_result("distill_intent_slot", {
        "data": "ATIS/SNIPS joint intent + slots; model chosen on dev, test once, seeds paired",
        "settings": {"alpha": args.alpha, "temperature": args.temperature, "soft_grid": args.soft_grid,
                     "lrs": args.lrs, "seeds": args.seeds, "l3_layers": LAYERS},
        "metrics": metrics, "ratio": ratio, "paired": {**kept.get("paired", {}), args.data: paired},
        "details": details})
    for name, model in printed.items():
        print(f"{args.data:<6}{name:<12}" + "  ".join(f"{k} {model['metrics'][k]:6.2f} ± {model['std'][k]:.2f}"
                                                 for k in KEYS))


if __name__ == "__main__":
    main()
