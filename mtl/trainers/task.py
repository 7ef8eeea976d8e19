"""Task: one reader + its head(s) (+ mix ratio, loss weight, aux flag): what a MultiHeadTrainer samples.

PALM's `Trainer` (mtl.trainers.trainer) is a Task that can also train alone."""
from torch import nn

from mtl.components.backbones.adapters import LoRA
from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.errors import ContractError, check_contract


class Task:
    """A task. `head` is one Head, or a dict of heads fed by one reader in one encoder pass (joint mode).
    Inside a MultiHeadTrainer it is a unit of sampling. `loss_weight` scales all of its heads' losses.

    `reuse_head_with` (another task, or its name): this task has no head of its own but uses the other
    task's head(s), the very same modules and parameters (two data sets with one label space, say). The
    MultiHeadTrainer holding both tasks resolves a name; a head named after the other task is renamed after
    this one (so metrics read `<this task>.accuracy`). Both tasks' readers must give the heads' label fields
    the same label names.

    `adapter` (a `mtl.backbone.LoRA`, or its arguments as a dict): the task trains its own LoRA adapter in
    the shared encoder instead of the encoder itself; where every task of a run has one, the encoder stays
    frozen (docs/adapters.md).
    """

    def __init__(self, name: str, reader: Reader | None = None, head: Head | dict[str, Head] | None = None,
                 mix_ratio: float = 1.0, dev_reader: Reader | None = None,
                 reuse_head_with: "Task | str | None" = None, loss_weight: float = 1.0,
                 backbone: Encoder | None = None, adapter: LoRA | dict | None = None) -> None:
        if mix_ratio < 0:
            raise ValueError(f"task {name!r}: mix_ratio must be >= 0, got {mix_ratio}")
        if reuse_head_with is not None and head is not None:
            raise ValueError(f"task {name!r}: give either `head` or `reuse_head_with`, not both")
        if loss_weight < 0:
            raise ValueError(f"task {name!r}: loss_weight must be >= 0, got {loss_weight}")
        self.name, self.mix_ratio, self.is_aux = name, float(mix_ratio), False
        self.loss_weight = float(loss_weight)  # scales every head loss of this task in the step
        self.reader, self.dev_reader = reader, dev_reader
        self.heads: dict[str, Head] = {}
        if head is not None:
            self.heads = dict(head) if isinstance(head, dict) else {name: head}
        self.reuse_head_with = reuse_head_with
        self.head_owner: Task | None = None  # the task whose heads this one uses (set by link_shared_heads)
        self.head_sharers: list[Task] = []  # the tasks that use this one's heads
        self.backbone = backbone
        self.adapter = LoRA(**adapter) if isinstance(adapter, dict) else adapter
        self.budget, self.cur_train_step = 0, 0

    # ---- PALM verbs -------------------------------------------------------------------------------------
    def set_as_aux(self) -> None:
        """An auxiliary task trains when drawn but never holds training open."""
        self.is_aux = True

    def build_forward(self, backbone: Encoder, head: Head | dict[str, Head] | None = None) -> nn.Module:
        """Bind the backbone and head(s), checking their contracts; returns the head (PALM's loss var)."""
        if self.reuse_head_with is not None:
            self.heads = self._shared_heads(head)
        elif head is not None:
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
        try:
            for head in self.heads.values():
                needed = head.input_fields + (head.label_fields if reader.phase != "predict" else ())
                check_contract(reader, reader.fields, head, needed)
                if head.num_classes is not None and reader.phase != "predict":
                    for field in head.label_fields:
                        _check_label_space(reader, head, field)
        except ContractError as error:
            if self.head_owner is None:
                raise
            raise ContractError(f"task {self.name!r} reuses the head of task {self.head_owner.name!r}, which does "
                                f"not fit this task's reader: {error}") from None
        if reader.phase != "predict":
            self._check_shared_labels(reader)

    # ---- head sharing -------------------------------------------------------------------------------------
    def _shared_heads(self, given: Head | dict[str, Head] | None) -> dict[str, Head]:
        """The owner's heads (the same modules), a head named after the owner renamed after this task."""
        owner = self.head_owner
        if owner is None:
            raise ValueError(f"task {self.name!r}: reuse_head_with={_name_of(self.reuse_head_with)!r} is not linked "
                             "yet; put both tasks in one MultiHeadTrainer before building")
        if not owner.heads:
            raise ValueError(f"task {self.name!r} reuses the head of task {owner.name!r}, which has no head yet; "
                             f"give {owner.name!r} its head first")
        shared = {self.name if name == owner.name else name: head for name, head in owner.heads.items()}
        if given is not None and list((given if isinstance(given, dict) else {0: given}).values()) != \
                list(shared.values()):
            raise ValueError(f"task {self.name!r} reuses the head of task {owner.name!r}: call "
                             "build_forward(backbone) without a head")
        return shared

    def _check_shared_labels(self, reader: Reader) -> None:
        """Tasks sharing a head must mean the same label by the same id, or one task would learn the other's
        labels under wrong names."""
        root = self.head_owner or self
        for other in [root, *root.head_sharers]:
            other_reader = other.reader or other.dev_reader
            needed = {f for head in self.heads.values() for f in head.input_fields + head.label_fields}
            if other is self or other_reader is None or not needed <= other_reader.fields:
                continue  # a reader the heads do not fit gets its own contract error
            for field in {f for head in self.heads.values() for f in head.label_fields}:
                mine, theirs = reader.label_names.get(field), other_reader.label_names.get(field)
                if mine is not None and theirs is not None and mine != theirs:
                    raise ContractError(f"tasks {self.name!r} and {other.name!r} share a head but their readers' "
                                        f"label maps for {field} differ ({len(mine)} labels: {mine[:5]}... vs "
                                        f"{len(theirs)}: {theirs[:5]}...); give both readers the same label map")


def link_shared_heads(tasks: list[Task]) -> None:
    """Resolve every task's `reuse_head_with` among `tasks` (a name or a Trainer object), following chains
    to the task that owns the heads. Fails on an unknown name, a task not in the list, itself, or a cycle."""
    by_name = {task.name: task for task in tasks}
    for task in tasks:
        task.head_sharers = []
    for task in tasks:
        task.head_owner = None if task.reuse_head_with is None else _owner(task, by_name)
        if task.head_owner is not None:
            task.head_owner.head_sharers.append(task)


def _owner(task: Task, by_name: dict[str, Task]) -> Task:
    seen, current = [task.name], task
    while current.reuse_head_with is not None:
        wanted = _name_of(current.reuse_head_with)
        found = by_name.get(wanted)
        if found is None or (isinstance(current.reuse_head_with, Task) and found is not current.reuse_head_with):
            raise ValueError(f"task {current.name!r}: reuse_head_with={wanted!r} is not a task of this "
                             f"MultiHeadTrainer; the tasks are {sorted(by_name)}")
        if found.name in seen:
            raise ValueError(f"task {task.name!r}: reuse_head_with goes round in a circle "
                             f"({' -> '.join(seen + [found.name])}); one task must own the head")
        seen.append(found.name)
        current = found
    return current


def _name_of(task: "Task | str") -> str:
    return task.name if isinstance(task, Task) else str(task)


def _check_label_space(reader: Reader, head: Head, field: str) -> None:
    """A head must have room for every label the reader knows, and every id in the data must fit it."""
    names = reader.label_names.get(field)
    if names is not None and len(names) > head.num_classes:
        raise ContractError(f"{type(reader).__name__} has {len(names)} labels for {field} but "
                            f"{type(head).__name__} was built with num_classes={head.num_classes}")
    reader.check_num_classes(field, head.num_classes)
