"""Components as data: a dotted path plus constructor arguments, in both directions.

A config names a component by `_component_: mtl.head.Classify`; an exported model writes the same form for
each of its heads and readers, so the folder rebuilds itself with no user code and no pickle.
"""
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

COMPONENT = "_component_"


def locate(path: str) -> Any:
    """The object a dotted path names: the longest importable module prefix, then attributes
    (`mtl.head.Classify`, `mtl.backbone.BERT.from_pretrained`, `mypkg.heads.MyHead`)."""
    parts = path.split(".")
    if not path or not all(part.isidentifier() for part in parts):
        raise ImportError(f"{path!r} is not a dotted path (module.Name)")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            target = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                raise  # the module exists but one of its own imports is missing: say so
            continue
        for depth, attribute in enumerate(parts[cut:], start=cut):
            if not hasattr(target, attribute):
                raise ImportError(f"cannot import {path!r}: {'.'.join(parts[:depth])!r} has no attribute {attribute!r}")
            target = getattr(target, attribute)
        return target
    raise ImportError(f"cannot import {path!r}: no module named {parts[0]!r}")


def dotted_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def parameters(target: Callable) -> list[inspect.Parameter]:
    """Constructor (or function) parameters, without `self`/`cls`. For a class this is `__init__`'s signature:
    the one a user reads in the class, whatever `__new__` does."""
    if not inspect.isclass(target):
        return list(inspect.signature(target).parameters.values())  # bound classmethods drop `cls` already
    return list(inspect.signature(target.__init__).parameters.values())[1:]


def is_plain(value: Any) -> bool:
    """JSON-ready: what a config or an exported spec may hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def component_spec(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`{"_component_": path, arg: value, ...}` rebuilding `obj`.

    Arguments come from what the object recorded when built (heads do, see `Head.__new__`), else from
    attributes named like the parameters (scikit-learn's convention), else from the parameters' defaults.
    `skip` names arguments the loader supplies itself (a reader's `vocab_path` and `phase`).
    """
    cls = type(obj)
    params = [p for p in parameters(cls) if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in skip]
    recorded = getattr(obj, "_init_args", None)
    values: dict[str, Any] = {}
    spec: dict[str, Any] = {COMPONENT: dotted_path(cls)}
    if recorded is not None:
        bound = inspect.signature(cls.__init__).bind_partial(None, *recorded[0], **recorded[1])
        values = {k: v for k, v in bound.arguments.items() if k in {p.name for p in params}}
        for param in parameters(cls):  # `**kwargs` a subclass passes on: kept as given
            if param.kind == param.VAR_KEYWORD:
                spec.update({k: _plain(v) for k, v in bound.arguments.get(param.name, {}).items()})
    for param in params:
        if param.name in values:
            value = values[param.name]
        elif recorded is None and hasattr(obj, param.name) and is_plain(_plain(getattr(obj, param.name))):
            value = getattr(obj, param.name)
        elif param.default is not param.empty:
            value = param.default
        else:
            raise ValueError(f"cannot export {cls.__name__}: no value for its argument {param.name!r} "
                             f"(store it as self.{param.name})")
        value = _plain(value)
        if not is_plain(value):
            raise ValueError(f"cannot export {cls.__name__}: argument {param.name!r} is a "
                             f"{type(value).__name__}, not a plain value (number, string, list, dict)")
        spec[param.name] = value
    return spec


def build(spec: dict[str, Any], **overrides: Any) -> Any:
    """Instantiate a flat spec (plain arguments only), with `overrides` replacing or adding arguments."""
    args = {k: v for k, v in spec.items() if k != COMPONENT}
    return locate(spec[COMPONENT])(**{**args, **overrides})
