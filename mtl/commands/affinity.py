"""`mtl affinity CONFIG`: a normal multi-task run with the task-affinity estimate on, then its report.

The run trains as `mtl train` would (checkpoints, logs, resume); every `--every` steps the lookahead (TAG) and
gradient-cosine estimates are taken (mtl.trainers.affinity) and logged. At the end, in `save_path/affinity/`:
both matrices on the console and in affinity.json, a heat-map of each (with matplotlib installed), the best
grouping into at most `--groups` groups, and one ready-to-run config per group (mtl.trainers.task_groups).
"""
import argparse
import json
import logging
from pathlib import Path

from mtl import plots
from mtl.commands.training import train
from mtl.config.build import Run
from mtl.config.yaml_file import read_yaml
from mtl.errors import MtlError
from mtl.trainers.affinity import AffinityEstimator
from mtl.trainers.task_groups import best_grouping, format_matrix, group_configs

log = logging.getLogger("mtl")
TITLES = {"tag": "lookahead affinity Z(i -> j) = 1 - L_j(after a step for i) / L_j(before), to first order",
          "tag_exact": "exact lookahead affinity Z(i -> j) = 1 - L_j(after a step for i) / L_j(before)",
          "grad_cosine": "gradient cosine cos(g_i, g_j) on the shared encoder"}


def affinity(args: argparse.Namespace) -> int:
    def prepare(run: Run) -> None:
        if len(run.trainer.tasks) < 2:
            raise MtlError(f"{args.config}: task affinity needs at least two tasks, the config has one")
        run.trainer.affinity = AffinityEstimator(args.every, args.probe_size, args.exact_every)
    return train(args, prepare, lambda run, result: report(run, result, args))


def report(run: Run, result: dict, args: argparse.Namespace) -> Path:
    """The matrices, pictures, grouping advice and per-group configs of a finished run."""
    estimator, out = run.trainer.affinity, run.save_path / "affinity"
    if not estimator.history:
        raise MtlError(f"no affinity estimate was taken: the run made {result['steps']} steps, fewer than --every "
                       f"{args.every}")
    matrices = {"tag": estimator.tag, "grad_cosine": estimator.cosine,
                **({"tag_exact": estimator.tag_exact} if estimator.tag_exact else {})}
    out.mkdir(parents=True, exist_ok=True)
    for kind, matrix in matrices.items():
        log.info("%s\n", format_matrix(matrix, TITLES[kind]))
    pictures = _heatmaps(matrices, out)
    groups, score = best_grouping(matrices["tag"], args.groups)
    configs = group_configs(read_yaml(Path(args.config)), groups, out)
    summary = {"estimates": len(estimator.history), "every": args.every, "probe_size": args.probe_size,
               "exact_every": args.exact_every, "seconds": round(estimator.seconds, 2),
               "train_seconds": round(result["train_seconds"], 2),
               "cost_fraction_of_run": round(estimator.seconds / result["train_seconds"], 4), **matrices,
               "groups": groups, "group_score": round(score, 4), "configs": [p.name for p in configs]}
    (out / "affinity.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    log.info("suggested grouping (at most %d groups, score %.4f): %s", args.groups, score,
             " | ".join(" + ".join(g) for g in groups))
    log.info("ready to run: %s", "  ".join(f"mtl train {p}" for p in configs))
    log.info("estimates took %.1f s of a %.1f s run (%.1f%%); pictures: %s", estimator.seconds,
             result["train_seconds"], 100 * summary["cost_fraction_of_run"],
             ", ".join(str(p) for p in pictures) or "none (pip install matplotlib to draw them)")
    return out


def _heatmaps(matrices: dict, out: Path) -> list[Path]:
    if not plots.AVAILABLE:  # matplotlib is an optional extra
        return []
    return [plots.heatmap(matrix, out / f"{kind}.png", TITLES[kind].split(" Z(")[0].split(" cos(")[0])
            for kind, matrix in matrices.items()]
