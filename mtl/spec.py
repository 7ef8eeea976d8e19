"""Components as data: a dotted path plus constructor arguments, in both directions.

A config names a component by `_component_: mtl.head.Classify`; an exported model writes the same form for
each of its heads and readers, so the folder rebuilds itself with no user code and no pickle.

Two ways to turn a path into an object. `locate` is for the user's own code (a YAML config, a script): it
imports whatever the path names. `locate_component` is for files someone else may have written (a model
folder's model.json): it admits only a class, subclassing the right base, from an allowed package, and it
decides that from the string before importing anything, so an untrusted module never even runs its imports.
"""
import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from mtl.errors import MtlError

COMPONENT = "_component_"
TRUST_HINT = "trust_code=True (`mtl predict --trust-code`)"


def locate(path: str) -> Any:
    """The object a dotted path names: the longest importable module prefix, then attributes
    (`mtl.head.Classify`, `mtl.backbone.BERT.from_pretrained`, `mypkg.heads.MyHead`). Anything at all: only
    for paths the user wrote (configs, scripts); a model folder's paths go through `locate_component`."""
    parts = path.split(".")
    if not path or not all(part.isidentifier() for part in parts):
        raise ImportError(f"{path!r} is not a dotted path (module.Name)")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            target = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                # the module exists, but one of its own imports is missing: say which
                raise ImportError(f"cannot import {path!r}: importing {module_name!r} failed: {error}"
                                  f"{searched(error.name.split('.')[0])}") from error
            continue
        for depth, attribute in enumerate(parts[cut:], start=cut):
            if not hasattr(target, attribute):
                raise ImportError(f"cannot import {path!r}: {'.'.join(parts[:depth])!r} has no attribute {attribute!r}")
            target = getattr(target, attribute)
        return target
    raise ImportError(f"cannot import {path!r}: no module named {parts[0]!r}{searched(parts[0])}")


def searched(module: str) -> str:
    """Where Python looked for a top-level `module` besides the installed packages, and what to do: the folders
    on the import path that hold the user's own code (the `mtl` command adds the config's folder and the
    current folder; `python -m` the current folder; a script its own folder)."""
    installed = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    folders = []
    for entry in sys.path:
        folder = os.path.abspath(entry or os.curdir)
        if os.path.isdir(folder) and folder not in folders and "site-packages" not in folder and not any(
                folder == root or folder.startswith(root + os.sep) for root in installed):
            folders.append(folder)
    where = ", ".join(folders) if folders else "no folder of your own"
    return (f" (searched {where} and the installed packages: put {module}.py or the {module}/ package in one of "
            f"those folders, or pip install it)")


def admits(module: str, allowed: Sequence[str] | None) -> bool:
    """Whether `module` is one of the `allowed` packages or inside one, judged on whole name components
    (`mtl` admits `mtl.head`, never `mtlevil`); `None` admits every module (trusted code)."""
    return allowed is None or any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def locate_component(path: Any, base: type, key: str, allowed: Sequence[str] | None = ("mtl",)) -> type:
    """The class a model folder's `_component_` names, or MtlError (naming `key`) without running anything.

    `path` must be public ASCII identifiers (no `_name`: no `mtl.__main__`, no `__builtins__`); only a module
    prefix that `allowed` admits is imported (`None`: any, for trusted folders); attributes are read
    statically (no module `__getattr__`, no descriptors); the result must be a class, subclass `base`, and
    be defined in an admitted module. Nothing is called.
    """
    parts = path.split(".") if isinstance(path, str) else []
    if len(parts) < 2 or not all(p.isascii() and p.isidentifier() and not p.startswith("_") for p in parts):
        raise MtlError(f"{key}: refused {path!r}: expected the dotted path of a {base.__name__} class "
                       "(module.Class, public ASCII identifiers only)")
    trust = _trust_hint(".".join(parts[:-1]))
    modules = [".".join(parts[:cut]) for cut in range(len(parts) - 1, 0, -1)]
    modules = [name for name in modules if admits(name, allowed)]  # decided on the string, before any import
    if not modules:
        raise MtlError(f"{key}: refused {path!r}: a model folder may name only classes from "
                       f"{' or '.join(allowed or ())}{trust}")
    target = _import_prefix(path, parts, modules, key)
    if not inspect.isclass(target):
        raise MtlError(f"{key}: refused {path!r}: it is a {type(target).__name__}, not a class; a model folder "
                       f"names only {base.__name__} classes (trusting the folder does not change this)")
    if not issubclass(target, base):
        raise MtlError(f"{key}: refused {path!r}: {target.__name__} is not a subclass of {base.__name__} "
                       "(trusting the folder does not change this)")
    if not admits(target.__module__, allowed):  # an allowed module re-exports a class from elsewhere
        raise MtlError(f"{key}: refused {path!r}: the class is defined in {target.__module__!r}, which a model "
                       f"folder may not name{_trust_hint(target.__module__)}")
    return target


def _trust_hint(module: str) -> str:
    return (f"; if you trust whoever wrote this folder, allow that module: allowed_modules=[{module!r}] "
            f"(`mtl predict --allow-module {module}`), or any module: {TRUST_HINT}")


def _import_prefix(path: str, parts: list[str], modules: list[str], key: str) -> Any:
    """Import the longest of `modules` (allowed prefixes of `path`) that exists, then read the rest of the
    path as attributes with `inspect.getattr_static`, which runs no `__getattr__` and no descriptor."""
    for name in modules:
        try:
            target: Any = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
                continue  # no such module: a shorter prefix may be the module and the rest attributes
            raise MtlError(f"{key}: cannot import {path!r}: importing {name!r} failed: {error}") from error
        except Exception as error:  # an allowed module that is broken
            raise MtlError(f"{key}: cannot import {path!r}: importing {name!r} failed: "
                           f"{type(error).__name__}: {error}") from error
        for depth, attribute in enumerate(parts[name.count(".") + 1:], start=name.count(".") + 1):
            try:
                target = inspect.getattr_static(target, attribute)
            except AttributeError:
                raise MtlError(f"{key}: cannot import {path!r}: {'.'.join(parts[:depth])!r} has no attribute "
                               f"{attribute!r}") from None
        return target
    raise MtlError(f"{key}: cannot import {path!r}: no module named {modules[-1]!r}{searched(modules[-1])}")


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
    """Instantiate a flat spec (plain arguments only), with `overrides` replacing or adding arguments.
    For specs the user wrote: it calls whatever the path names (a model folder goes through `locate_component`)."""
    args = {k: v for k, v in spec.items() if k != COMPONENT}
    return locate(spec[COMPONENT])(**{**args, **overrides})
