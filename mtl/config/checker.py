"""Checking config blocks against the signatures of what they will call, before anything is built.

Every problem is collected with its key (the dotted path in the file, e.g. `tasks[0].heads.intent.input_dim`)
and the component it belongs to, so one run of the checker reports all of them at once.
"""
import inspect
import typing
from pathlib import Path
from typing import Any, Callable

from mtl.config import values as v
from mtl.spec import COMPONENT, locate, parameters

AUTO = "auto"


def join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else name


def _hints(target: Callable) -> dict[str, Any]:
    """Type hints with string annotations resolved where possible (raw annotations otherwise)."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # a hint naming something not importable here: fall back to the raw annotations
        return {p.name: p.annotation for p in parameters(target)}


class Checker:
    """Walks config blocks, collecting problems and returning normalized values: relative paths in
    Path-typed arguments resolved against the config file's folder."""

    def __init__(self, base_dir: Path, check_resources: bool = True) -> None:
        self.base_dir, self.check_resources = base_dir, check_resources
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def component(self, node: Any, key: str, supplied: tuple[str, ...] = (), auto: tuple[str, ...] = ()) -> Any:
        """A `_component_` block: the dotted path must import, its arguments must fit the signature."""
        if not v.is_component(node):
            self.problem(key, f"expected a block with `{COMPONENT}: dotted.path.Name`, got {_show(node)}")
            return node
        path = node[COMPONENT]
        try:
            target = locate(path) if isinstance(path, str) else None
        except ImportError as error:
            self.problem(join(key, COMPONENT), str(error))
            return node
        if not callable(target):
            self.problem(join(key, COMPONENT), f"{path!r} is not a class or function")
            return node
        args = {k: value for k, value in node.items() if k != COMPONENT}
        return {COMPONENT: path, **self.call(args, target, key, path, supplied, auto)}

    def call(self, args: Any, target: Callable, key: str, what: str, supplied: tuple[str, ...] = (),
             auto: tuple[str, ...] = (), special: dict[str, Callable[[Any, str], Any]] | None = None) -> dict:
        """`args` as keyword arguments of `target` (`what` names it in messages). `supplied` arguments are
        mtl's to give; `auto` ones may say `auto`; `special` keys are checked by their own function."""
        if not isinstance(args, dict):
            self.problem(key or "(top level)", f"expected a mapping of {what} arguments, got {_show(args)}")
            return {}
        params = [p for p in parameters(target) if p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)]
        open_ended = any(p.kind == p.VAR_KEYWORD for p in params)
        named = {p.name: p for p in params if p.kind != p.VAR_KEYWORD and p.name not in supplied}
        hints, out = _hints(target), {}
        for name, value in args.items():
            sub = join(key, name)
            if name in supplied:
                self.problem(sub, f"is not a config key for {what}: mtl passes it")
            elif name not in named and not open_ended:
                self.problem(sub, f"unknown key for {what} (it takes: {', '.join(named) or 'nothing'})")
            elif special and name in special:
                out[name] = special[name](value, sub)
            else:
                hint = hints.get(name, named[name].annotation if name in named else inspect.Parameter.empty)
                out[name] = self.value(value, hint, sub, what, name in auto)
        for name, param in named.items():
            if param.default is param.empty and name not in args:
                self.problem(join(key, name), f"missing: {what} needs it")
        return out

    def value(self, value: Any, hint: Any, key: str, what: str, may_be_auto: bool = False) -> Any:
        """One argument: nested components are checked in turn, plain values against the type hint."""
        if may_be_auto and value == AUTO:
            return value
        if v.is_component(value):
            node = self.component(value, key)
            target = _try_locate(node)
            if target is not None and not v.component_fits(target, hint):
                self.problem(key, f"{what} expects {v.describe(hint)}, but {node[COMPONENT]} makes something else")
            return node
        if isinstance(value, list):
            value = [self._nested(item, join(key, i)) for i, item in enumerate(value)]
        elif isinstance(value, dict):
            value = {k: self._nested(item, join(key, k)) for k, item in value.items()}
        elif isinstance(value, str):
            problem = v.special_problem(value, self.check_resources)
            if problem:
                self.problem(key, problem)
        if not v.type_ok(value, hint):
            self.problem(key, f"{what} expects {v.describe(hint)}, got {type(value).__name__} {_show(value)}")
        elif v.accepts_path(hint):
            value = v.resolve_path(value, self.base_dir)
        return value

    def _nested(self, item: Any, key: str) -> Any:
        return self.component(item, key) if v.is_component(item) else item

    def path(self, value: Any, key: str, required: bool, must_exist: bool) -> Any:
        """A data or output path of the run schema, resolved against the config file's folder."""
        if value is None and not required:
            return None
        if not isinstance(value, str):
            self.problem(key, f"expects a path (string), got {_show(value)}")
            return value
        resolved = v.resolve_path(value, self.base_dir)
        if must_exist and self.check_resources and not Path(resolved).exists():
            self.problem(key, f"{resolved} does not exist (relative paths start at the config's folder)")
        return resolved


def _try_locate(node: Any) -> Any:
    try:
        return locate(node[COMPONENT])
    except (ImportError, TypeError, KeyError):
        return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
