"""Checking one config value against a parameter's type hint, and the few special values a config may hold.

Only plain YAML values reach here (numbers, strings, booleans, lists, mappings, null). The checks are the
simple ones a config needs: int/float/str/bool/list/dict/Path, Optional and unions, Literal, and classes
(which only a `_component_` block can supply). Anything fancier is accepted and left to the constructor.
"""
import collections.abc
import importlib
import importlib.util
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any

from mtl.components.backbones.store import encoder_dir
from mtl.errors import MtlError
from mtl.spec import COMPONENT

PACKAGE, HUB, ENCODER = "package:", "hub:", "encoder:"


def is_component(value: Any) -> bool:
    return isinstance(value, dict) and COMPONENT in value


def _members(annotation: Any) -> tuple | None:
    """The alternatives of a union (`X | Y`, `Optional[X]`), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def accepts_path(annotation: Any) -> bool:
    members = _members(annotation)
    return annotation is Path or bool(members and Path in members)


def describe(annotation: Any) -> str:
    members = _members(annotation)
    if members:
        return " or ".join(describe(m) for m in members)
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def type_ok(value: Any, annotation: Any) -> bool:
    """Whether a plain value fits the annotation (int is accepted for float; bool is not an int here).
    A `_component_` block is checked where it is built (`component_fits`), not here."""
    if is_component(value):
        return True
    if annotation in (inspect.Parameter.empty, Any) or isinstance(annotation, (str, typing.TypeVar)):
        return True
    members = _members(annotation)
    if members:
        return any(type_ok(value, m) for m in members)
    if annotation is None or annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return value in args
    if origin is not None:
        return _container_ok(value, origin, args)
    simple = {bool: (bool,), int: (int,), float: (int, float), str: (str,), Path: (str,), list: (list,),
              tuple: (list,), dict: (dict,)}
    if annotation in simple:
        return isinstance(value, simple[annotation]) and not (annotation in (int, float) and isinstance(value, bool))
    return not inspect.isclass(annotation)  # a class (Reader, Scheduler, ...) needs a `_component_` block


def _container_ok(value: Any, origin: Any, args: tuple) -> bool:
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(type_ok(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(type_ok(v, item) for v in value)
    if origin is dict:
        item = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(type_ok(v, item) for v in value.values())
    return True


def component_fits(target: Any, annotation: Any) -> bool:
    """Whether what a `_component_` builds can go where `annotation` asks (checked only for classes)."""
    produced = target if inspect.isclass(target) else _return_class(target)
    if produced is None or annotation in (inspect.Parameter.empty, Any):
        return True
    wanted = _members(annotation) or (annotation,)
    classes = [w for w in wanted if inspect.isclass(w)]
    return not classes or any(issubclass(produced, c) for c in classes)


def _return_class(function: Any) -> type | None:
    try:
        hint = typing.get_type_hints(function).get("return")
    except Exception:  # unresolvable string hints: don't guess
        return None
    return hint if inspect.isclass(hint) else None


def special_problem(value: str, check_resources: bool) -> str | None:
    """`package:NAME` must name an installed model package (checked without importing it); `encoder:NAME` an
    assembled encoder."""
    if check_resources and value.startswith(PACKAGE):
        name = value[len(PACKAGE):]
        if not name.isidentifier() or importlib.util.find_spec(name) is None:
            return f"model package {name!r} is not installed (pip install it, or give a model folder)"
    if check_resources and value.startswith(ENCODER):
        try:
            encoder_dir(value[len(ENCODER):])
        except MtlError as error:
            return str(error)
    return None


def resolve_special(value: Any) -> Any:
    """`package:NAME` -> NAME.get_model_path() (a model shipped as a Python package); `hub:NAME` -> NAME;
    `encoder:NAME` -> the folder `mtl get-encoder NAME` assembled."""
    if isinstance(value, str) and value.startswith(ENCODER):
        return str(encoder_dir(value[len(ENCODER):]))
    if isinstance(value, str) and value.startswith(PACKAGE):
        return str(importlib.import_module(value[len(PACKAGE):]).get_model_path())
    if isinstance(value, str) and value.startswith(HUB):
        return value[len(HUB):]
    return value


def resolve_path(value: Any, base_dir: Path) -> Any:
    """A relative path (not `package:` or `hub:`) resolved against the config file's folder."""
    if not isinstance(value, str) or value.startswith((PACKAGE, HUB, ENCODER)) or Path(value).is_absolute():
        return value
    return os.path.normpath(base_dir / value)  # `..` folded, symlinks kept as written
