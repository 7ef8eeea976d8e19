"""`mtl train`, `mtl distill` and `mtl eval`: a run config checked, built and trained or scored."""
import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable

from mtl import distributed
from mtl.commands import import_roots
from mtl.components.savers import checkpoint, run_folder
from mtl.config import build_eval_run, build_run, load_config
from mtl.config.build import Run
from mtl.config.yaml_file import read_yaml
from mtl.errors import MtlError
from mtl.safe_load import model_folder

log = logging.getLogger("mtl")


def train(args: argparse.Namespace, prepare: Callable[[Run], None] | None = None,
          report: Callable[[Run, dict], None] | None = None) -> int:
    """`prepare(run)` runs after the run is built, `report(run, result)` after it trained (`mtl affinity`)."""
    import_roots(Path(args.config).parent, Path.cwd())
    config = load_config(args.config)  # every key checked before anything is built
    save_path = config.saver["save_path"]
    resume_from = checkpoint.latest_checkpoint(save_path) if args.resume else None
    if args.resume:  # with nothing to resume it starts over (a run killed before its first checkpoint)
        log.info("resuming from %s" if resume_from else "nothing to resume in %s: starting over",
                 resume_from or save_path)
    elif not (args.overwrite or config.saver.get("overwrite")):  # before anything is built or read
        run_folder.refuse_a_run_in(save_path, "--resume continues it, --overwrite deletes it and starts over")
    run = build_run(config)
    run.trainer.saver.overwrite = True  # what a run left there goes: asked for, or nothing to resume from
    _keep_config(config, run.save_path)
    if prepare is not None:
        prepare(run)
    started = time.perf_counter()
    result = run.trainer.train(**run.train_options, resume_from=resume_from, selector=run.selector)
    result["train_seconds"] = time.perf_counter() - started
    log.info("%s", run_folder.closing_line(result, run.trainer.total_steps, run.save_path / "best"))
    if report is not None and distributed.is_main():
        report(run, result)
    return 0


def distill(args: argparse.Namespace) -> int:
    """`mtl train` on a config that names its teachers (docs/distillation.md)."""
    raw = read_yaml(Path(args.config))
    if not isinstance(raw, dict) or raw.get("distill") is None:
        raise MtlError(f"{args.config}: no `distill:` section naming the teacher (teacher: FOLDER, or teachers: "
                       "{task: FOLDER}); a config without one trains with `mtl train`")
    return train(args)


def evaluate(args: argparse.Namespace) -> int:
    """Only what scoring needs is built: label maps from the checkpoint's labels.json, and only the split's
    data read (not the training and dev files)."""
    import_roots(Path(args.config).parent, Path.cwd())
    config = load_config(args.config)
    folder = model_folder(args.checkpoint) if args.checkpoint else _default_checkpoint(Path(config.saver["save_path"]))
    run = build_eval_run(config, folder)
    run.trainer.load_checkpoint(folder)
    readers = run.eval_readers(args.split)
    if not readers:
        raise MtlError(f"no task of {args.config} has {args.split}_data")
    metrics = run.trainer.evaluate(readers)
    if distributed.is_main():  # under torchrun every rank scored the same gathered records
        print(json.dumps({"checkpoint": str(folder), "split": args.split, "metrics": metrics}, indent=1))
    return 0


def _default_checkpoint(save_path: Path) -> Path:
    for name in ("best", "final"):
        if (save_path / name / "heads.safetensors").is_file():
            return save_path / name
    raise MtlError(f"{save_path}: no best/ or final/ checkpoint; train first or give --checkpoint")


def _keep_config(config: object, save_path: Path) -> None:
    """The checked config (absolute paths) beside the checkpoints: what this run was (global rank 0 alone
    writes, as for every file of a run)."""
    if not distributed.is_main():
        return
    save_path.mkdir(parents=True, exist_ok=True)
    values = dataclasses.asdict(config)
    values["path"] = str(values["path"])
    (save_path / "config.json").write_text(json.dumps(values, indent=1, default=str), encoding="utf-8")
