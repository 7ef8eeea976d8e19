"""PALM's Trainer: a task that, alone, trains, evaluates and predicts through a one-task MultiHeadTrainer,
so single-task and multi-task training share one loop."""
from pathlib import Path
from typing import Any

from mtl.components.readers.base import Reader
from mtl.trainers.multi_head import MultiHeadTrainer
from mtl.trainers.task import Task

TASK_ARGUMENTS = ("reader", "head", "mix_ratio", "dev_reader", "reuse_head_with", "loss_weight", "backbone",
                  "adapter")


class Trainer(Task):
    """`mtl.Trainer(name, reader=..., head=..., ...)`: the Task arguments, plus, for training it alone, any
    MultiHeadTrainer argument (lr, num_epochs, precision, ...)."""

    def __init__(self, name: str, *args: Any, **options: Any) -> None:
        task_options = {key: options.pop(key) for key in TASK_ARGUMENTS if key in options}
        super().__init__(name, *args, **task_options)
        self._solo_options, self._solo = options, None

    @property
    def solo(self) -> MultiHeadTrainer:
        """The one-task MultiHeadTrainer behind this trainer's own train/evaluate/predict."""
        if self._solo is None:
            self._solo = MultiHeadTrainer([self], backbone=self.backbone, **self._solo_options)
        return self._solo

    def build_backward(self, optimizer: Any, weight_decay: float | None = None) -> None:
        self.solo.build_backward(optimizer, weight_decay)

    def set_saver(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3,
                  keep_best_optimizer_state: bool = False, overwrite: bool = False) -> None:
        self.solo.set_saver(save_path, save_steps, keep_last, keep_best_optimizer_state, overwrite)

    def load_pretrain(self, pretrain_dir: str | Path) -> None:
        self.solo.load_pretrain(pretrain_dir)

    def train(self, print_steps: int = 10, **kwargs: Any) -> dict:
        return self.solo.train(print_steps, **kwargs)

    def evaluate(self, reader: Reader | None = None) -> dict[str, float]:
        return self.solo.evaluate({self.name: reader} if reader is not None else None)[self.name]

    def predict(self, inputs: Reader | list[str], output_file: str | Path | None = None) -> list[dict]:
        return self.solo.predict(self.name, inputs, output_file)
