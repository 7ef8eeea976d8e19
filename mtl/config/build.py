"""From a checked run config to objects: the backbone, each task's reader (data loaded) and heads, the trainer.

Built in the order the values need: heads come after their reader has loaded its training data (for
`num_classes: auto`) and after the backbone (for `input_dim: auto`).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtl.components.backbones.encoder import Encoder
from mtl.components.readers.base import Reader
from mtl.components.savers.checkpoint import LABELS, read_labels
from mtl.config.checker import AUTO, join
from mtl.config.schema import RunConfig, TaskSection
from mtl.config.values import resolve_special
from mtl.distill import Teacher, distill_into
from mtl.errors import ConfigError, MtlError
from mtl.spec import COMPONENT, locate, parameters
from mtl.trainers.multi_head import MultiHeadTrainer
from mtl.trainers.selection import Selector
from mtl.trainers.trainer import Trainer


def instantiate(node: dict, key: str = "", **extra: Any) -> Any:
    """Build a `_component_` block: nested blocks first, `package:NAME` and `hub:NAME` values resolved.
    A constructor that fails is reported with the block's key and component."""
    target = locate(node[COMPONENT])
    args = {name: _built(value, join(key, name)) for name, value in node.items() if name != COMPONENT}
    try:
        return target(**args, **extra)
    except Exception as error:
        raise ConfigError(f"{key or 'config'}: {node[COMPONENT]} failed: {type(error).__name__}: {error}") from error


def _built(value: Any, key: str) -> Any:
    if isinstance(value, dict) and COMPONENT in value:
        return instantiate(value, key)
    if isinstance(value, list):
        return [_built(item, join(key, index)) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {name: _built(item, join(key, name)) for name, item in value.items()}
    return resolve_special(value)


@dataclass
class Run:
    """What a config builds: the trainer (saver set), the selector, the train() options."""

    config: RunConfig
    trainer: MultiHeadTrainer
    selector: Selector
    train_options: dict

    @property
    def save_path(self) -> Path:
        return Path(self.config.saver["save_path"])

    def eval_readers(self, split: str = "test") -> dict[str, Reader]:
        """Each task's reader over its `test_data` (or `dev_data`), read now; tasks without that split are
        left out."""
        if split not in ("test", "dev"):
            raise ValueError(f"split must be 'test' or 'dev', got {split!r}")
        readers = {}
        for section, task in zip(self.config.tasks, self.trainer.tasks):
            path = section.test_data if split == "test" else section.dev_data
            if path is not None:
                readers[task.name] = task.reader.eval_reader(path, section.file_format, section.batch_size)
        return readers


def build_run(config: RunConfig, labels: dict[str, dict[str, list[str]]] | None = None) -> Run:
    """Instantiate everything a config describes; reads the training and dev data, loads no checkpoint.
    With `labels` (a checkpoint's labels.json, see `build_eval_run`) no data is read: each reader takes its
    task's saved label maps, and `Run.eval_readers` reads the split to score. The random initial weights
    (heads, an encoder built from a config) come from `trainer.seed`: the same config builds the same model."""
    torch.manual_seed(int(config.trainer.get("seed", 0)))
    backbone = instantiate(config.backbone, "backbone")
    tasks = [_build_task(section, join("tasks", index), backbone, None if labels is None else labels[section.name])
             for index, section in enumerate(config.tasks)]
    trainer = MultiHeadTrainer(tasks, backbone=backbone, **_built(config.trainer, "trainer"))
    if config.optimizer is not None:
        trainer.build_backward(instantiate(config.optimizer, "optimizer"))
    trainer.set_saver(**config.saver)
    if config.distill is not None and labels is None:  # scoring a student needs no teacher
        _attach_teachers(trainer, config.distill)
    return Run(config, trainer, Selector(**config.selection), dict(config.train))


def _attach_teachers(trainer: MultiHeadTrainer, section: dict) -> None:
    """The `distill:` section: each task's teacher labels its training data once (cached), then the student's
    heads mix its targets with the labels."""
    options = {"temperature": section.get("temperature", 2.0), "cache_dir": section.get("cache_dir"),
               "precision": section.get("precision", "auto")}
    if section.get("teacher") is not None:
        teachers: Any = Teacher(section["teacher"], **options)
    else:
        teachers = {name: Teacher(folders, **options) for name, folders in section["teachers"].items()}
    distill_into(trainer, teachers, alpha=section.get("alpha", 0.5), hidden_weight=section.get("hidden_weight", 0.0))


def build_eval_run(config: RunConfig, checkpoint: Path) -> Run:
    """What `mtl eval` needs to score `checkpoint`: the config's components with the label maps the checkpoint
    was trained with (its labels.json), and no training or dev data read."""
    labels = read_labels(checkpoint)
    missing = [section.name for section in config.tasks if section.name not in labels]
    if missing:
        raise MtlError(f"{Path(checkpoint) / LABELS}: no labels for task(s) {missing} (it has {sorted(labels)}): "
                       "was this checkpoint trained with this config? Give --checkpoint the run's best/ or final/")
    return build_run(config, labels)


def _build_task(section: TaskSection, key: str, backbone: Encoder,
                labels: dict[str, list[str]] | None = None) -> Trainer:
    reader = instantiate(section.reader, join(key, "reader"))
    if labels is not None:  # scoring a checkpoint: its label maps, and no data until the split is read
        reader.use_label_names(labels)
        return _task(section, key, backbone, reader, None)
    if section.stream is not None:
        reader.load_stream(section.train_data, batch_size=section.batch_size, **section.stream)
    else:
        reader.load_data(section.train_data, section.file_format, num_epochs=None, batch_size=section.batch_size,
                         group_by_length=section.group_by_length, max_tokens=section.max_tokens,
                         pad_to_multiple_of=section.pad_to_multiple_of, cache_dir=section.cache_dir)
    dev = reader.eval_reader(section.dev_data, section.file_format) if section.dev_data is not None else None
    return _task(section, key, backbone, reader, dev)


def _task(section: TaskSection, key: str, backbone: Encoder, reader: Reader, dev: Reader | None) -> Trainer:
    """The task's heads (after its reader knows its labels, for `num_classes: auto`) and its mtl.Trainer."""
    if section.heads is not None:
        blocks = {name: (block, join(join(key, "heads"), name)) for name, block in section.heads.items()}
    elif section.head is not None:
        blocks = {section.name: (section.head, join(key, "head"))}  # one head, named after its task
    else:
        blocks = {}  # reuse_head_with: the other task's heads, tied by MultiHeadTrainer
    heads = {name: _build_head(block, block_key, reader, backbone) for name, (block, block_key) in blocks.items()}
    task = Trainer(section.name, reader=reader, head=heads or None, mix_ratio=section.mix_ratio, dev_reader=dev,
                   reuse_head_with=section.reuse_head_with, loss_weight=section.loss_weight, adapter=section.adapter)
    if section.aux:
        task.set_as_aux()
    return task


def _build_head(block: dict, key: str, reader: Reader, backbone: Encoder) -> Any:
    block = dict(block)
    if block.get("input_dim") == AUTO:
        block["input_dim"] = backbone.hidden_size
    if block.get("num_classes") == AUTO:
        block["num_classes"] = _num_classes(block, key, reader)
    return instantiate(block, key)


def _num_classes(block: dict, key: str, reader: Reader) -> int:
    """`num_classes: auto`: the number of label names the reader has for the head's `label_field`."""
    params = {p.name: p for p in parameters(locate(block[COMPONENT]))}
    if "label_field" not in params:
        raise ConfigError(f"{key}.num_classes: `auto` reads the head's label_field, but {block[COMPONENT]} "
                          "has no label_field argument; give num_classes")
    field = block.get("label_field", params["label_field"].default)
    names = reader.label_names.get(field)
    if not names:
        raise ConfigError(f"{key}.num_classes: `auto` found no label names for {field!r} in "
                          f"{type(reader).__name__} (it has {sorted(reader.label_names)}); set the head's "
                          "label_field, give the reader a label map, or write num_classes")
    return len(names)
