"""The run config that `mtl train|eval` read: its sections, loading, and checking before anything is built.

Each section holds the arguments of one Python call, so the config and the API cannot drift apart:

    backbone:   a `_component_` block            e.g. mtl.backbone.BERT.from_pretrained(name_or_path)
    tasks:      a list of TaskSection            each builds a reader, its heads and an mtl.Trainer
    trainer:    mtl.MultiHeadTrainer(...)        lr, num_epochs, seed, precision, sampling_reference, ...
    optimizer:  a `_component_` block (optional) e.g. mtl.optimizer.Adam with an lr_schedule block
    train:      MultiHeadTrainer.train(...)      print_steps, eval_steps, max_steps
    saver:      mtl.saver.Saver(...)             save_path, save_steps, keep_last
    selection:  mtl.Selector(...)                metrics, weights, early_stopping_patience
    distill:    DistillSection (optional)        teacher folder(s), temperature, alpha: a student run

An unknown key, a missing argument, a wrong type or a component path that does not import is reported
with its key and component, all problems at once, before any model or data is loaded.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl.components.backbones.adapters import LoRA
from mtl.components.readers.base import Reader
from mtl.components.savers.saver import Saver
from mtl.config.checker import AUTO, Checker, join
from mtl.config.yaml_file import read_yaml
from mtl.errors import ConfigError
from mtl.trainers.multi_head import MultiHeadTrainer
from mtl.trainers.selection import Selector

HEAD_AUTO = ("num_classes", "input_dim")  # `auto`: from the reader's label names / the backbone's hidden size
SECTIONS = {"trainer": (MultiHeadTrainer, ("trainers", "backbone", "sampler"), "mtl.MultiHeadTrainer"),
            "train": (MultiHeadTrainer.train, ("self", "resume_from", "selector"), "MultiHeadTrainer.train"),
            "saver": (Saver, (), "mtl.saver.Saver"),
            "selection": (Selector, (), "mtl.Selector")}


@dataclass
class TaskSection:
    """One entry of `tasks:`. `reader` is a component; `heads` maps head names to components (the joint mode:
    one reader, one encoder pass, several heads), or `head` is the task's one head, or `reuse_head_with` names
    another task whose heads this one shares (the same weights). Heads may say
    `num_classes: auto` (the reader's label names for the head's `label_field`) and `input_dim: auto` (the
    backbone's hidden size). `batch_size`, `file_format`, `group_by_length`,
    `max_tokens`, `pad_to_multiple_of` and `cache_dir` go to the reader's load_data. `stream` (a mapping of
    Reader.load_stream's arguments: `steps_per_epoch`, `shuffle_buffer`, `chunk_lines`, `shuffle`) trains
    from `train_data` (a file or a folder of shards) read in a bounded window instead of loading it whole.
    `adapter` (a mapping of mtl.backbone.LoRA's arguments: `r`, `alpha`, `dropout`, `target_modules`) gives the
    task its own LoRA adapter in the shared encoder, which stays frozen where every task has one."""

    name: str
    reader: dict
    train_data: Path
    heads: dict | None = None
    head: dict | None = None
    dev_data: Path | None = None
    test_data: Path | None = None
    batch_size: int = 32
    file_format: str | None = None  # the reader's default_format (tsv; json for MRC; text for MLM)
    group_by_length: bool = True
    max_tokens: int | None = None  # token-budget batches (load_data's max_tokens)
    pad_to_multiple_of: int | None = None  # batch widths rounded up (load_data's pad_to_multiple_of)
    cache_dir: Path | None = None  # tokenized features cached there (load_data's cache_dir)
    stream: dict | None = None  # Reader.load_stream's arguments: stream train_data instead of loading it
    mix_ratio: float = 1.0
    loss_weight: float = 1.0  # scales every head loss of the task (mtl.Trainer's loss_weight)
    aux: bool = False
    reuse_head_with: str | None = None  # another task's name: use its head(s) instead of `head`/`heads`
    adapter: dict | None = None  # LoRA's arguments: this task trains its own adapter (mtl.backbone.LoRA)


@dataclass
class DistillSection:
    """`distill:` makes the run a student's (mtl.distill): `teacher` is one model folder or a list (an
    ensemble, soft labels averaged) teaching every task; or `teachers` maps task names to folders (several
    single-task teachers into one multi-task student). `alpha` weighs the soft loss (1 - alpha the labels);
    `temperature` softens the teacher's distributions; `hidden_weight` > 0 adds the hidden-state relation
    loss (teacher and student must tokenize alike); targets are cached in `cache_dir`."""

    teacher: str | list | None = None
    teachers: dict | None = None
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    cache_dir: Path | None = None
    precision: str = "auto"  # the teacher's, while it labels the data once


@dataclass
class RunConfig:
    """A checked config (paths made absolute); `mtl.config.build_run` turns it into objects."""

    backbone: dict
    tasks: list
    saver: dict
    trainer: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    optimizer: dict | None = None
    selection: dict = field(default_factory=dict)
    distill: dict | None = None
    path: Path | None = None  # the file it came from; not a config key


def load_config(path: str | Path, check_resources: bool = True) -> RunConfig:
    """Read and check a run config. `check_resources=False` checks only the schema and the components'
    signatures (not that data folders and model packages exist): what a test of shipped configs needs."""
    path = Path(path)
    raw = read_yaml(path)  # ConfigError naming the file, the line and the fix
    return validate_config(raw, Path(os.path.abspath(path)).parent, check_resources, source=path)


def validate_config(raw: Any, base_dir: Path, check_resources: bool = True, source: Path | None = None) -> RunConfig:
    """Check a parsed config; relative paths resolve against `base_dir`. Raises one ConfigError listing
    every problem, each with its key and component."""
    checker = Checker(Path(base_dir), check_resources)
    special = {"backbone": lambda value, key: checker.component(value, key),
               "optimizer": lambda value, key: None if value is None else checker.component(
                   value, key, supplied=("loss_var",)),
               "tasks": lambda value, key: _tasks(checker, value, key),
               "distill": lambda value, key: None if value is None else _distill(checker, value, key)}
    for name, (target, supplied, what) in SECTIONS.items():
        special[name] = lambda value, key, t=target, s=supplied, w=what: checker.call(value or {}, t, key, w, s)
    checked = checker.call(raw if raw is not None else {}, RunConfig, "", "the run config", ("path",), (), special)
    if not checker.problems:
        _cross_check(checker, checked)
    if checker.problems:
        where = f"{source}: " if source else ""
        lines = checker.problems
        raise ConfigError(where + (lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines)))
    checked["tasks"] = [TaskSection(**task) for task in checked["tasks"]]
    return RunConfig(**checked, path=source)


def _tasks(checker: Checker, value: Any, key: str) -> list:
    if not isinstance(value, list) or not value:
        checker.problem(key, f"expects a list of tasks, got {value!r}")
        return []
    return [_task(checker, entry, join(key, index)) for index, entry in enumerate(value)]


def _task(checker: Checker, value: Any, key: str) -> dict:
    def data(required: bool) -> Any:
        return lambda path, sub: checker.path(path, sub, required, must_exist=True)

    def head(node: Any, sub: str) -> Any:
        return checker.component(node, sub, auto=HEAD_AUTO)

    def heads(node: Any, sub: str) -> Any:
        if not isinstance(node, dict) or not node:
            checker.problem(sub, f"expects a mapping of head name -> head block, got {node!r}")
            return node
        return {name: head(block, join(sub, name)) for name, block in node.items()}

    def stream(node: Any, sub: str) -> Any:
        return checker.call(node, Reader.load_stream, sub, "a stream (Reader.load_stream)",
                            supplied=("self", "input_path", "batch_size"))

    def adapter(node: Any, sub: str) -> Any:
        return node if node is None else checker.call(node, LoRA, sub, "a LoRA adapter (mtl.backbone.LoRA)")

    special = {"reader": lambda node, sub: checker.component(node, sub), "head": head, "heads": heads,
               "stream": stream, "adapter": adapter,
               "train_data": data(True), "dev_data": data(False), "test_data": data(False)}
    task = checker.call(value, TaskSection, key, "a task (mtl.config.TaskSection)", special=special)
    if isinstance(value, dict) and sum(name in value for name in ("head", "heads", "reuse_head_with")) != 1:
        checker.problem(key, "a task needs exactly one of `head` (one head), `heads` (name -> head) or "
                        "`reuse_head_with` (another task's name: its heads are shared)")
    return task


def _distill(checker: Checker, value: Any, key: str) -> dict:
    """The teacher folders resolved against the config's folder and checked to exist."""
    def folders(node: Any, sub: str) -> Any:
        if isinstance(node, list) and node:
            return [checker.path(item, join(sub, index), True, must_exist=True) for index, item in enumerate(node)]
        return checker.path(node, sub, True, must_exist=True)

    def by_task(node: Any, sub: str) -> Any:
        if not isinstance(node, dict) or not node:
            checker.problem(sub, f"expects a mapping of task name -> teacher folder(s), got {node!r}")
            return node
        return {name: folders(item, join(sub, name)) for name, item in node.items()}
    special = {"teacher": folders, "teachers": by_task,
               "cache_dir": lambda node, sub: checker.path(node, sub, False, must_exist=False)}
    section = checker.call(value, DistillSection, key, "distill (mtl.config.DistillSection)", special=special)
    if isinstance(value, dict) and ("teacher" in value) == ("teachers" in value):
        checker.problem(key, "give exactly one of `teacher` (folder(s) teaching every task) or `teachers` (task "
                        "name -> folder(s))")
    return section


def _cross_check(checker: Checker, config: dict) -> None:
    """What no single signature can see: task names, and the sections that refer to them."""
    names = [task["name"] for task in config["tasks"]]
    for index, name in enumerate(names):
        if names.index(name) != index:
            checker.problem(join(join("tasks", index), "name"), f"task name {name!r} is used twice")
    if (config.get("trainer") or {}).get("num_epochs") is None:
        checker.problem("trainer.num_epochs", "missing: mtl.MultiHeadTrainer needs it here (a config's readers "
                        "draw batches for as long as training runs)")
    reference = (config.get("trainer") or {}).get("sampling_reference")
    if reference is not None and reference not in names:
        checker.problem("trainer.sampling_reference", f"{reference!r} is not a task; the tasks are {names}")
    selection = config.get("selection") or {}
    for section in ("metrics", "weights"):
        for task_name in (selection.get(section) or {}):
            if task_name not in names:
                checker.problem(f"selection.{section}.{task_name}", f"mtl.Selector: no task {task_name!r}; "
                                f"the tasks are {names}")
    for index, task in enumerate(config["tasks"]):
        other = task.get("reuse_head_with")
        if other is not None and (other not in names or other == task["name"]):
            checker.problem(join(join("tasks", index), "reuse_head_with"), f"{other!r} is not another task; the "
                            f"tasks are {names}")
    for task_name in ((config.get("distill") or {}).get("teachers") or {}):
        if task_name not in names:
            checker.problem(f"distill.teachers.{task_name}", f"no task {task_name!r}; the tasks are {names}")
    by_name = {task["name"]: task for task in config["tasks"]}
    for task_name, metric in (selection.get("metrics") or {}).items():
        task = by_name.get(task_name, {})
        heads = (by_name.get(task.get("reuse_head_with"), {}) or task).get("heads") or {task_name: None}
        if metric not in ("score", "frame_accuracy") and metric.split(".", 1)[0] not in heads:
            checker.problem(f"selection.metrics.{task_name}", f"mtl.Selector: {metric!r} is not `score`, "
                            f"`frame_accuracy` or `<head>.<metric>` for a head of {task_name!r} ({sorted(heads)})")


__all__ = ["RunConfig", "TaskSection", "DistillSection", "load_config", "validate_config", "AUTO"]
