"""Trainer: one task = one reader + its head(s) (+ mix ratio, aux flag); alone, it trains a single task."""
from pathlib import Path
from typing import Any

from torch import nn

from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.errors import ContractError, check_contract


class Trainer:
    """A task. `head` is one Head, or a dict of heads fed by one reader in one encoder pass (joint mode).

    Inside a MultiHeadTrainer it is a unit of sampling; alone, its `train`/`evaluate`/`predict` run a
    one-task MultiHeadTrainer, so single-task and multi-task training share one loop.
    """

    def __init__(self, name: str, reader: Reader | None = None, head: Head | dict[str, Head] | None = None,
                 mix_ratio: float = 1.0, dev_reader: Reader | None = None, **solo_options: Any) -> None:
        if mix_ratio < 0:
            raise ValueError(f"task {name!r}: mix_ratio must be >= 0, got {mix_ratio}")
        self.name, self.mix_ratio, self.is_aux = name, float(mix_ratio), False
        self.reader, self.dev_reader = reader, dev_reader
        self.heads: dict[str, Head] = {}
        if head is not None:
            self.heads = dict(head) if isinstance(head, dict) else {name: head}
        self.backbone: Encoder | None = solo_options.pop("backbone", None)
        self.budget, self.cur_train_step = 0, 0
        self._solo_options, self._solo = solo_options, None

    # ---- PALM verbs -------------------------------------------------------------------------------------
    def set_as_aux(self) -> None:
        """An auxiliary task trains when drawn but never holds training open."""
        self.is_aux = True

    def set_as_target(self) -> None:
        self.is_aux = False

    def build_forward(self, backbone: Encoder, head: Head | dict[str, Head] | None = None) -> nn.Module:
        """Bind the backbone and head(s), checking their contracts; returns the head (PALM's loss var)."""
        if head is not None:
            self.heads = dict(head) if isinstance(head, dict) else {self.name: head}
        if not self.heads:
            raise ValueError(f"task {self.name!r}: no head to build")
        self.backbone = backbone
        for head_module in self.heads.values():
            check_contract(backbone, set(backbone.output_fields), head_module, head_module.backbone_outputs)
        if self.reader is not None:
            self.check_reader(self.reader)
        return next(iter(self.heads.values())) if len(self.heads) == 1 else nn.ModuleDict(self.heads)

    def fit_reader(self, reader: Reader, phase: str = "train") -> None:
        """Attach the training reader ('train') or the dev reader ('eval')."""
        if phase not in ("train", "eval"):
            raise ValueError(f"phase must be 'train' or 'eval', got {phase!r}")
        self.check_reader(reader)
        if phase == "train":
            self.reader = reader
        else:
            self.dev_reader = reader

    def check_reader(self, reader: Reader) -> None:
        """The reader must yield what the backbone and every head need (labels only where it has them)."""
        if self.backbone is not None:
            check_contract(reader, reader.fields, self.backbone, tuple(self.backbone.input_fields))
        for head in self.heads.values():
            needed = head.input_fields + (head.label_fields if reader.phase != "predict" else ())
            check_contract(reader, reader.fields, head, needed)
            if head.num_classes is not None and reader.phase != "predict":
                for field in head.label_fields:
                    _check_label_space(reader, head, field)

    # ---- single-task use ------------------------------------------------------------------------------
    @property
    def solo(self) -> Any:
        """The one-task MultiHeadTrainer behind this trainer's own train/evaluate/predict."""
        if self._solo is None:
            from mtl.trainers.multi_head import MultiHeadTrainer
            self._solo = MultiHeadTrainer([self], backbone=self.backbone, **self._solo_options)
        return self._solo

    def build_backward(self, optimizer: Any, weight_decay: float | None = None) -> None:
        self.solo.build_backward(optimizer, weight_decay)

    def set_saver(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3) -> None:
        self.solo.set_saver(save_path, save_steps, keep_last)

    def load_pretrain(self, pretrain_dir: str | Path) -> None:
        self.solo.load_pretrain(pretrain_dir)

    def train(self, print_steps: int = 10, **kwargs: Any) -> dict:
        return self.solo.train(print_steps, **kwargs)

    def evaluate(self, reader: Reader | None = None) -> dict[str, float]:
        return self.solo.evaluate({self.name: reader} if reader is not None else None)[self.name]

    def predict(self, inputs: Reader | list[str], output_file: str | Path | None = None) -> list[dict]:
        return self.solo.predict(self.name, inputs, output_file)


def _check_label_space(reader: Reader, head: Head, field: str) -> None:
    """A head must have room for every label the reader knows, and every id in the data must fit it."""
    names = reader.label_names.get(field)
    if names is not None and len(names) > head.num_classes:
        raise ContractError(f"{type(reader).__name__} has {len(names)} labels for {field} but "
                            f"{type(head).__name__} was built with num_classes={head.num_classes}")
    reader.check_num_classes(field, head.num_classes)
