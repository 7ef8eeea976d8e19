"""What decoding needs to know of a task: its name and its heads (a trainer's Task has more), and the task of
a loaded model (`PredictTask`): its predict-phase reader, its heads and the names of its labels."""
from dataclasses import dataclass
from typing import Protocol

from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader


class TaskHeads(Protocol):
    """A task as the decode path sees it: a name and heads fed by one reader in one encoder pass. Both
    `mtl.trainers.task.Task` and `PredictTask` are one."""

    name: str
    heads: dict[str, Head]


@dataclass
class PredictTask:
    """One task of a loaded model: its predict-phase reader, its heads, and label names per label field."""

    name: str
    reader: Reader
    heads: dict[str, Head]
    label_names: dict[str, list[str]]
