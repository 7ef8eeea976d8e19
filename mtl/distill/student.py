"""Training a student on its teachers: `distill_into(trainer, teachers)` turns an ordinary MultiHeadTrainer into
a distillation run.

The student is built as any mtl model is (its own encoder and tokenizer, heads with the teachers' label
spaces); each task with a teacher gets the teacher's targets for its training examples (computed once,
memory-mapped: the teacher never runs while the student trains), collated into every batch beside the
labels, and each of its heads that can be distilled mixes `alpha` of the soft loss with `1 - alpha` of the
hard one (mtl.components.heads.distill). With `hidden_weight`, the student also matches the teacher's
token relations of the last hidden states, where both tokenize every example alike (checked here).
Everything else is the trainer's: sampling, balancers, resume, torchrun, saving — and what it saves is an
ordinary model folder.
"""
from typing import Mapping

from mtl.components.heads.distill import RELATIONS, TEACHER, Distilling
from mtl.distill.targets import TargetTable, example_key
from mtl.distill.teacher import Teacher
from mtl.errors import MtlError


def distill_into(trainer: "object", teachers: Teacher | Mapping[str, Teacher], alpha: float = 0.5,
                 hidden_weight: float = 0.0) -> dict:
    """Attach `teachers` (one for every task, or task name -> teacher: several single-task teachers distilled
    into one multi-task student) to `trainer`'s tasks. Returns task -> {label field: examples with targets}.
    A task's training reader must have been loaded from a file (`load_data`), or hold texts (`from_texts`).
    `hidden_weight` > 0 adds the hidden-state relation loss at that weight (teacher and student must
    tokenize alike)."""
    by_task = teachers if isinstance(teachers, Mapping) else {task.name: teachers for task in trainer.tasks}
    unknown = sorted(set(by_task) - {task.name for task in trainer.tasks})
    if unknown:
        raise MtlError(f"teachers given for tasks {unknown}, which the trainer does not have "
                       f"({[task.name for task in trainer.tasks]})")
    attached = {}
    by_name = {task.name: task for task in trainer.tasks}
    for task in trainer.tasks:
        if task.name in by_task:
            attached[task.name] = _attach(task, _heads(task, by_name), by_task[task.name], alpha, hidden_weight)
    return attached


def _heads(task: "object", by_name: dict) -> dict:
    """The task's heads, or those of the task it shares them with (`reuse_head_with`: unlabelled text for a
    labelled task's heads), following chains."""
    while not task.heads and getattr(task, "reuse_head_with", None) is not None:
        other = task.reuse_head_with
        task = by_name[other] if isinstance(other, str) else other
    return task.heads


def _attach(task: "object", heads: dict, teacher: Teacher, alpha: float, hidden_weight: float) -> dict[str, int]:
    reader = task.reader
    data = reader.input_file if reader.input_file != "<texts>" else [f.meta["text"] for f in reader.features]
    tables = teacher.targets(data, task.name, getattr(reader, "file_format", None), hidden=hidden_weight > 0)
    distilled = []
    for head in heads.values():
        field = head.label_fields[0] if head.label_fields else None
        if field in tables and field != RELATIONS:
            _check_labels(task.name, field, reader.label_names.get(field), tables[field])
            carries = hidden_weight if not distilled else 0.0  # the relation loss rides on the first head
            head.distilling = Distilling(teacher.temperature, alpha, carries)
            distilled.append(field)
    if not distilled:
        raise MtlError(f"task {task.name!r}: none of its heads ({sorted(heads)}) has a teacher target "
                       f"(the teacher hands on {sorted(set(tables) - {RELATIONS})})")
    if hidden_weight > 0:
        _check_tokens(task.name, reader, tables[RELATIONS])
        distilled.append(RELATIONS)
    used = {field: tables[field] for field in distilled}
    reader.side_inputs[TEACHER] = lambda metas: {field: table.collate(metas) for field, table in used.items()}
    return {field: len(table.keys) for field, table in used.items() if field != RELATIONS}


def _check_tokens(task: str, reader: "object", relations: TargetTable) -> None:
    """The hidden-state loss compares token by token: the teacher must have cut every example into as many
    tokens as the student does."""
    differ = []
    for feature in reader.features:
        rows = relations.rows(example_key(feature.meta))
        if rows is not None and len(rows) != len(feature.fields["input_ids"]) ** 2:
            differ.append(feature.meta)
    if differ:
        where = ", ".join(str(example_key(meta)) for meta in differ[:5])
        raise MtlError(f"task {task!r}: the teacher tokenizes {len(differ)} of {len(reader.features)} examples into "
                       f"another number of tokens than the student (first at line {where}); the hidden-state loss "
                       "needs the same tokenization: distil without hidden_weight")


def _check_labels(task: str, field: str, student: list[str] | None, table: TargetTable) -> None:
    """The student's label ids must mean what the teacher's mean: the same names in the same order."""
    if table.names is not None and student is not None and list(student) != list(table.names):
        raise MtlError(f"task {task!r}: the student's labels for {field!r} ({len(student)}: {student[:4]}...) are not "
                       f"the teacher's ({len(table.names)}: {table.names[:4]}...) in the same order; train the "
                       "student on the teacher's training file, or give its reader the teacher's label maps")
