"""A model folder someone else wrote is data: model.json is checked whole before anything is imported or built.

What `read_model_folder` admits (and `Predictor.from_folder` then builds):
- each `_component_` is a class of the right base (Encoder for the backbone, Reader, Head), from mtl, or from
  the modules the user allows (`allowed_modules`), or from anywhere only with `trust_code=True`;
- arguments are plain JSON values, and no string argument points outside the folder (absolute, `~`, `..`);
- every file the folder refers to (model.json's backbone and tokenizer folders, heads.safetensors,
  labels.json) resolves inside it, symlinks included;
- no config in those folders names remote code (`auto_map`) unless `trust_code=True`.
Every refusal is an MtlError naming the file, the key in it and, where trust would change the answer, the flag.
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from mtl.components.backbones.adapters import ADAPTER_WEIGHTS, LoRA
from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.components.savers.checkpoint import HEADS, LABELS, SPEC, labels_shape_ok
from mtl.errors import MtlError
from mtl.spec import COMPONENT, TRUST_HINT, locate_component

FORMAT = 1
RESERVED = frozenset(dir(nn.ModuleDict()))  # names a task or head cannot take: ModuleDict refuses them


@dataclass(frozen=True)
class Component:
    """A checked component: its class, its plain arguments, and where model.json said so (for messages)."""

    cls: type
    args: dict[str, Any]
    where: str


@dataclass(frozen=True)
class TaskPlan:
    name: str
    tokenizer: Path
    reader: Component
    heads: dict[str, Component]
    reuse_head_with: str | None


@dataclass(frozen=True)
class ModelPlan:
    """Everything `mtl.load` needs, checked: classes located, paths resolved inside the folder."""

    backbone: Component
    backbone_folder: Path
    tasks: list[TaskPlan]
    labels: dict[str, dict[str, list[str]]]
    heads_file: Path
    adapters: dict[str, tuple[LoRA, Path]] = field(default_factory=dict)  # task -> its LoRA and its folder
    base_checksum: str | None = None  # of the encoder weights the adapters were trained over
    base_weights: bool = True  # False: backbone/ holds the config alone; the base comes from the caller
    base_source: str | None = None  # where the base was loaded from when trained (for messages, never opened)


def read_model_folder(folder: str | Path, trust_code: bool = False,
                      allowed_modules: Sequence[str] | None = None) -> ModelPlan:
    """The checked plan of a model folder, or MtlError; FileNotFoundError when there is no such folder or it
    holds no model.json."""
    folder = model_folder(folder)
    if not (folder / SPEC).is_file():
        raise FileNotFoundError(f"{folder}: no {SPEC}; export the model with MultiHeadTrainer.export "
                                "(or give a checkpoint folder saved by mtl >= 0.1)")
    root = folder.resolve()
    spec_file = inside(root, SPEC, f"{folder}: {SPEC}", trust_code)
    spec = _read_json(spec_file, f"{folder / SPEC}")
    checker = _Checker(folder / SPEC, root, trust_code, _allowed(allowed_modules, trust_code))
    plan = checker.model(spec)
    labels = _read_json(inside(root, LABELS, f"{folder}: {LABELS}", trust_code), f"{folder / LABELS}")
    if not labels_shape_ok(labels):
        raise MtlError(f"{folder / LABELS}: expected {{task: {{label field: [label name, ...]}}}}")
    return ModelPlan(plan["backbone"], plan["backbone_folder"], plan["tasks"], labels,
                     inside(root, HEADS, f"{folder}: {HEADS}", trust_code), plan["adapters"], plan["base_checksum"],
                     plan["base_weights"], plan["base_source"])


def model_folder(folder: str | Path) -> Path:
    """`folder` as a Path when it is a folder; else FileNotFoundError saying it does not exist (a typo) or is a
    file, before any message about what a model folder should hold would mislead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {'is a file, not' if folder.exists() else 'does not exist; give'} a model "
                                "folder (a run's best/ or final/, a step-N/ checkpoint, or an export); check the path")
    return folder


def inside(root: Path, relative: Any, where: str, trust_code: bool = False) -> Path:
    """`root / relative`, refused unless it exists and it (and everything under it) resolves inside `root`:
    no absolute path, no `..`, no symlink out. Configs in it must not name remote code (`auto_map`)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or relative.startswith("~") or \
            Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise MtlError(f"{where}: refused {relative!r}: expected a relative path inside the model folder")
    path = root / relative
    try:
        if not path.exists():
            raise MtlError(f"{where}: {path} does not exist")
        todo, seen = [path], set()
        while todo:  # every entry, through links to folders inside too (each real folder once: no loops)
            entry = todo.pop()
            target = entry.resolve()
            if not target.is_relative_to(root):
                raise MtlError(f"{where}: refused {entry}: it resolves to {target}, outside the model folder "
                               f"{root} (a symlink out)")
            if target.is_dir() and target not in seen:
                seen.add(target)
                todo.extend(entry.iterdir())
        configs = sorted(path.glob("*.json")) if path.is_dir() else []
    except (OSError, RuntimeError, ValueError) as error:  # a symlink loop, a name too long or not encodable
        raise MtlError(f"{where}: refused {relative!r}: {error}") from None
    for config in configs:
        if not trust_code and "auto_map" in _json_object_or_none(config):
            raise MtlError(f"{where}: refused {config}: its `auto_map` names code shipped with the folder, which "
                           f"transformers would run; load it with {TRUST_HINT} only if you trust its author")
    return path


def _allowed(allowed_modules: Sequence[str] | None, trust_code: bool) -> tuple[str, ...] | None:
    if trust_code:
        return None
    if isinstance(allowed_modules, str):
        allowed_modules = [allowed_modules]
    extra = list(allowed_modules or [])
    for name in extra:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise MtlError(f"allowed_modules: {name!r} is not a dotted module name (mypkg.heads)")
    return ("mtl", *extra)


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:  # recursion: nested too deep
        raise MtlError(f"{where}: not valid JSON: {type(error).__name__}: {error}") from None
    except OSError as error:  # a folder where a file should be, unreadable
        raise MtlError(f"{where}: cannot be read: {error}") from None


def _json_object_or_none(path: Path) -> dict:
    """A config's top-level object, or {} when it is none (transformers then fails on it with its own error)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


class _Checker:
    """Walks model.json once, naming every problem by its key (`tasks[0].heads.slots._component_`)."""

    def __init__(self, file: Path, root: Path, trust_code: bool, allowed: tuple[str, ...] | None) -> None:
        self.file, self.root, self.trust_code, self.allowed = file, root, trust_code, allowed

    def fail(self, key: str, problem: str) -> MtlError:
        return MtlError(f"{self.file}: {key}: {problem}")

    def get(self, node: dict, key: str, name: str, kind: type, what: str) -> Any:
        """`node[name]`, of type `kind` (dict, list or str: JSON's own types), or MtlError naming the key."""
        if name not in node:
            raise self.fail(f"{key}.{name}".lstrip("."), f"missing (expected {what})")
        if not isinstance(node[name], kind):
            raise self.fail(f"{key}.{name}".lstrip("."), f"expected {what}, got {json.dumps(node[name])[:80]}")
        return node[name]

    def model(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise self.fail("(top level)", "expected an object with `backbone` and `tasks`")
        if spec.get("format", FORMAT) != FORMAT:
            raise self.fail("format", f"{spec['format']!r} is not a format this mtl reads ({FORMAT}); "
                                      "was it written by a newer mtl?")
        backbone = self.get(spec, "", "backbone", dict, "an object")
        encoder = self.component(backbone, "backbone", Encoder, with_args=False)
        folder = self.get(backbone, "backbone", "folder", str, "a folder inside the model folder")
        folder = inside(self.root, folder, f"{self.file}: backbone.folder", self.trust_code)
        tasks = self.get(spec, "", "tasks", list, "a list of tasks")
        if not tasks:
            raise self.fail("tasks", "expected at least one task")
        checked = [self.task(task, f"tasks[{i}]") for i, task in enumerate(tasks)]
        names = [task.name for task in checked]
        for i, task in enumerate(checked):
            if names.count(task.name) > 1:
                raise self.fail(f"tasks[{i}].name", f"{task.name!r} names two tasks")
            owner = task.reuse_head_with
            if owner is not None and (owner not in names or checked[names.index(owner)].reuse_head_with is not None):
                raise self.fail(f"tasks[{i}].reuse_head_with", f"{owner!r} is not a task of this file with heads")
        adapters = self.adapters(backbone.get("adapters", {}), names)
        checksum = backbone.get("base_checksum")
        if adapters and not isinstance(checksum, str):
            raise self.fail("backbone.base_checksum", "missing (expected the sha256 of the base encoder's weights)")
        base_weights = backbone.get("base_weights", True)
        if base_weights is not True and (base_weights is not False or not adapters):
            raise self.fail("backbone.base_weights", "expected true, or false for a folder of adapters")
        source = backbone.get("base_source")
        return {"backbone": encoder, "backbone_folder": folder, "tasks": checked, "adapters": adapters,
                "base_checksum": checksum if adapters else None, "base_weights": base_weights,
                "base_source": source if isinstance(source, str) else None}

    def adapters(self, node: Any, names: list[str]) -> dict[str, tuple[LoRA, Path]]:
        """`backbone.adapters`: {task: {"lora": LoRA's arguments, "folder": its folder inside}}."""
        if not isinstance(node, dict):
            raise self.fail("backbone.adapters", "expected an object {task: {lora, folder}}")
        checked = {}
        for name, entry in node.items():
            key = f"backbone.adapters.{name}"
            if name not in names:
                raise self.fail(key, f"{name!r} is not a task of this file ({names})")
            if not isinstance(entry, dict):
                raise self.fail(key, "expected an object {lora, folder}")
            settings = self.get(entry, key, "lora", dict, "LoRA's arguments (r, alpha, dropout, target_modules)")
            self.no_path_out(settings, f"{key}.lora")
            try:
                lora = LoRA(**settings)
            except (TypeError, ValueError) as error:
                raise self.fail(f"{key}.lora", str(error)) from None
            folder = inside(self.root, self.get(entry, key, "folder", str, "a folder inside the model folder"),
                            f"{self.file}: {key}.folder", self.trust_code)
            inside(self.root, str((folder / ADAPTER_WEIGHTS).relative_to(self.root)), f"{self.file}: {key}.folder")
            checked[name] = (lora, folder)
        return checked

    def task(self, task: Any, key: str) -> TaskPlan:
        if not isinstance(task, dict):
            raise self.fail(key, "expected an object (name, tokenizer, reader, heads)")
        name = self.name(self.get(task, key, "name", str, "a task name"), f"{key}.name")
        tokenizer = self.get(task, key, "tokenizer", str, "a tokenizer folder inside the model folder")
        reuse = task.get("reuse_head_with")
        if reuse is not None and not isinstance(reuse, str):
            raise self.fail(f"{key}.reuse_head_with", "expected a task name")
        heads = self.get(task, key, "heads", dict, "an object {head name: component}")
        if not heads and reuse is None:
            raise self.fail(f"{key}.heads", "expected at least one head")
        return TaskPlan(name, inside(self.root, tokenizer, f"{self.file}: {key}.tokenizer", self.trust_code),
                        self.component(self.get(task, key, "reader", dict, "a component"), f"{key}.reader", Reader),
                        {self.name(head, f"{key}.heads"): self.component(spec, f"{key}.heads.{head}", Head)
                         for head, spec in heads.items()},
                        reuse)

    def name(self, name: str, key: str) -> str:
        """A task or head name, usable as a torch module name (no '.', nothing nn.ModuleDict already has)."""
        if not name or "." in name or name in RESERVED:
            raise self.fail(key, f"{name!r} is not a usable name (empty, holds a '.', or a torch attribute)")
        return name

    def component(self, node: Any, key: str, base: type, with_args: bool = True) -> Component:
        if not isinstance(node, dict):
            raise self.fail(key, f"expected a component {{{COMPONENT!r}: ..., argument: value, ...}}")
        path = self.get(node, key, COMPONENT, str, f"the dotted path of a {base.__name__} class")
        cls = locate_component(path, base, f"{self.file}: {key}.{COMPONENT}", self.allowed)
        args = {name: value for name, value in node.items() if name != COMPONENT}
        if with_args:
            for name, value in args.items():
                if not name.isidentifier() or name.startswith("_"):
                    raise self.fail(f"{key}.{name}", "not an argument name")
                self.no_path_out(value, f"{key}.{name}")
        return Component(cls, args if with_args else {}, f"{self.file}: {key}")

    def no_path_out(self, value: Any, key: str) -> None:
        """Arguments are plain JSON values (json.loads makes nothing else); a string that reads as a path out
        of the folder (a label map file elsewhere) is refused: mtl's exports never hold one."""
        todo = [value]
        while todo:  # a loop, not recursion: the value may be nested as deep as json.loads allows
            item = todo.pop()
            if isinstance(item, str) and (os.path.isabs(item) or item.startswith("~") or
                                          ".." in item.replace("\\", "/").split("/")):
                raise self.fail(key, f"refused {item!r}: an argument may not point outside the model folder")
            todo.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
