"""Grouping advice from a task-affinity matrix: which tasks to train together, as ready-to-run configs.

A grouping is a partition of the tasks. Its score follows TAG's selection rule: each task j is served by
its group, and gains the mean affinity onto it from the other members of that group, mean over i != j of
Z(i -> j); a task alone gains 0. The best partition into at most `max_groups` groups is found by trying them
all (Bell(8) = 4,140 partitions for eight tasks; refused beyond `MAX_TASKS`). Ties go to fewer groups.
"""
import copy
from pathlib import Path
from typing import Iterator

import yaml

from mtl.errors import MtlError

MAX_TASKS = 10  # Bell(10) = 115,975 partitions: still quick; beyond, exhaustive search is not


def partitions(items: list[str], max_groups: int) -> Iterator[list[list[str]]]:
    """Every partition of `items` into at most `max_groups` non-empty groups (each once, order kept)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in partitions(rest, max_groups):
        for index in range(len(smaller)):  # `first` joins an existing group ...
            yield smaller[:index] + [[first] + smaller[index]] + smaller[index + 1:]
        if len(smaller) < max_groups:  # ... or starts its own
            yield [[first]] + smaller


def grouping_score(groups: list[list[str]], affinity: dict[str, dict[str, float]]) -> float:
    """Sum over tasks of the mean affinity onto each from the rest of its group (0 alone)."""
    total = 0.0
    for group in groups:
        for j in group:
            others = [affinity[i][j] for i in group if i != j]
            total += sum(others) / len(others) if others else 0.0
    return total


def best_grouping(affinity: dict[str, dict[str, float]], max_groups: int) -> tuple[list[list[str]], float]:
    """The partition into at most `max_groups` groups with the highest score, and that score."""
    tasks = list(affinity)
    if len(tasks) > MAX_TASKS:
        raise MtlError(f"grouping advice tries every partition: at most {MAX_TASKS} tasks, got {len(tasks)}")
    if max_groups < 1:
        raise MtlError(f"max_groups must be >= 1, got {max_groups}")
    best, best_score = [tasks], grouping_score([tasks], affinity)
    for groups in partitions(tasks, max_groups):
        score = grouping_score(groups, affinity)
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and len(groups) < len(best)):
            best, best_score = groups, score
    return best, best_score


def group_configs(config: dict, groups: list[list[str]], out_dir: Path, stem: str = "group") -> list[Path]:
    """One run config per group, copied from `config` (a parsed YAML run config) with only the group's tasks,
    its own save_path, and the sections that name tasks cut to the group's: ready for `mtl train`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, group in enumerate(groups, start=1):
        part = copy.deepcopy(config)
        part["tasks"] = [task for task in config["tasks"] if task["name"] in group]
        saver = part.setdefault("saver", {})
        saver["save_path"] = f"{saver.get('save_path', 'runs/run')}-{stem}{index}"
        trainer = part.get("trainer") or {}
        if trainer.get("sampling_reference") not in group:
            trainer.pop("sampling_reference", None)
        for section in ("metrics", "weights"):
            chosen = (part.get("selection") or {}).get(section)
            if isinstance(chosen, dict):
                part["selection"][section] = {k: v for k, v in chosen.items() if k in group}
        for task in part["tasks"]:
            if task.get("reuse_head_with") not in (None, *group):
                raise MtlError(f"task {task['name']!r} shares the heads of {task['reuse_head_with']!r}, which this "
                               "grouping puts in another group: keep them together")
        path = out_dir / f"{stem}{index}.yaml"
        path.write_text(yaml.safe_dump(part, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def format_matrix(matrix: dict[str, dict[str, float]], title: str) -> str:
    """The matrix as a console table: row i, column j holds the effect of a step for i on j."""
    tasks = list(matrix)
    width = max(8, *(len(t) for t in tasks)) + 2
    lines = [title, " " * width + "".join(f"{'-> ' + t:>{width}}" for t in tasks)]
    lines += [f"{i:<{width}}" + "".join(f"{matrix[i][j]:>{width}.4f}" for j in tasks) for i in tasks]
    return "\n".join(lines)
