"""From a checked run config to objects: the backbone, each task's reader (data loaded) and heads, the trainer.

Built in the order the values need: heads come after their reader has loaded its training data (for
`num_classes: auto`) and after the backbone (for `input_dim: auto`).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl.components.backbones.encoder import Encoder
from mtl.components.readers.base import Reader
from mtl.config.checker import AUTO, join
from mtl.config.schema import RunConfig, TaskSection
from mtl.config.values import resolve_special
from mtl.errors import ConfigError
from mtl.spec import COMPONENT, locate, parameters
from mtl.trainers.multi_head import MultiHeadTrainer
from mtl.trainers.selection import Selector
from mtl.trainers.solo import Trainer


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
        """Each task's reader over its `test_data` (or `dev_data`); tasks without that split are left out."""
        if split not in ("test", "dev"):
            raise ValueError(f"split must be 'test' or 'dev', got {split!r}")
        readers = {}
        for section, task in zip(self.config.tasks, self.trainer.tasks):
            path = section.test_data if split == "test" else section.dev_data
            if path is not None:
                readers[task.name] = task.dev_reader if split == "dev" else \
                    task.reader.eval_reader(path, section.file_format)
        return readers


def build_run(config: RunConfig) -> Run:
    """Instantiate everything a config describes; reads the training data, loads no checkpoint."""
    backbone = instantiate(config.backbone, "backbone")
    tasks = [_build_task(section, join("tasks", index), backbone) for index, section in enumerate(config.tasks)]
    trainer = MultiHeadTrainer(tasks, backbone=backbone, **_built(config.trainer, "trainer"))
    if config.optimizer is not None:
        trainer.build_backward(instantiate(config.optimizer, "optimizer"))
    trainer.set_saver(**config.saver)
    return Run(config, trainer, Selector(**config.selection), dict(config.train))


def _build_task(section: TaskSection, key: str, backbone: Encoder) -> Trainer:
    reader = instantiate(section.reader, join(key, "reader"))
    reader.load_data(section.train_data, section.file_format, num_epochs=None, batch_size=section.batch_size,
                     group_by_length=section.group_by_length, max_tokens=section.max_tokens,
                     pad_to_multiple_of=section.pad_to_multiple_of, cache_dir=section.cache_dir)
    if section.heads is not None:
        blocks = {name: (block, join(join(key, "heads"), name)) for name, block in section.heads.items()}
    elif section.head is not None:
        blocks = {section.name: (section.head, join(key, "head"))}  # one head, named after its task
    else:
        blocks = {}  # reuse_head_with: the other task's heads, tied by MultiHeadTrainer
    heads = {name: _build_head(block, block_key, reader, backbone) for name, (block, block_key) in blocks.items()}
    dev = reader.eval_reader(section.dev_data, section.file_format) if section.dev_data is not None else None
    task = Trainer(section.name, reader=reader, head=heads or None, mix_ratio=section.mix_ratio, dev_reader=dev,
                   reuse_head_with=section.reuse_head_with, loss_weight=section.loss_weight)
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
