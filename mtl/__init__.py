"""mtl: multi-task learning for NLP over one shared pretrained encoder, in the style of PaddlePALM.

The face of the package: every public name is loaded when it is first used (PEP 562 `__getattr__`), so
`import mtl` costs nothing beyond itself, `mtl --help` imports neither torch nor transformers, and an
inference process never loads the training modules it does not use. This is the one place in mtl where an
import is deferred on purpose (DESIGN.md, "Import rules").
"""
from importlib import import_module
from typing import TYPE_CHECKING, Any

from mtl.errors import ConfigError, ContractError, DataError, MtlError
from mtl.version import __version__

# public name -> (module, attribute); attribute None: the module itself (PALM's namespaces)
_LAZY: dict[str, tuple[str, str | None]] = {
    **{name: (f"mtl.{name}", None) for name in ("reader", "backbone", "head", "optimizer", "lr_sched", "saver",
                                                 "balancer", "config")},
    "Trainer": ("mtl.trainers.trainer", "Trainer"),
    "MultiHeadTrainer": ("mtl.trainers.multi_head", "MultiHeadTrainer"),
    "Selector": ("mtl.trainers.selection", "Selector"),
    "Predictor": ("mtl.predictor", "Predictor"),
    "load": ("mtl.predictor", "load"),
}

__all__ = [*_LAZY, "ConfigError", "ContractError", "DataError", "MtlError", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mtl' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    value = import_module(module_name)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from mtl import backbone, balancer, config, head, lr_sched, optimizer, reader, saver  # noqa: F401
    from mtl.predictor import Predictor, load  # noqa: F401
    from mtl.trainers.multi_head import MultiHeadTrainer  # noqa: F401
    from mtl.trainers.selection import Selector  # noqa: F401
    from mtl.trainers.trainer import Trainer  # noqa: F401
