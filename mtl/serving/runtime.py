"""The runtimes a model folder runs on, behind one small interface, listed in one table.

A runtime is what `mtl serve --runtime`, `mtl predict --runtime` and the server's /metadata know of an engine:
it says whether a folder is one it runs (`fits`, for `auto`) and loads it (`load`) into a `Model`, which
predicts texts for some or all tasks and describes itself. `RUNTIMES` maps each name to the class that
implements it, as a dotted path imported when the runtime is first used: the CLI reads its choices from the
table without importing torch, and adding a runtime is one new module and one line here. The table's order
is `auto`'s preference: the first runtime that fits the folder runs it.
"""
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol, Sequence

from mtl.errors import MtlError

AUTO = "auto"


@dataclass(frozen=True)
class LoadOptions:
    """How to load a folder, whatever the runtime: device, precision, intra-op threads (None: the runtime's
    default), what the folder may name beyond mtl's own classes (mtl.safe_load), and for LoRA adapter tasks
    the folders served beside it and the base encoder (docs/adapters.md)."""

    device: str | None = None
    precision: str = "auto"
    threads: int | None = None
    trust_code: bool = False
    allowed_modules: tuple[str, ...] = ()
    beside: tuple[Path, ...] = ()  # folders of adapter tasks served with the folder, over its one encoder
    base: Path | None = None  # the encoder a folder of adapters alone goes over


class Model(Protocol):
    """A loaded model, whatever runs it. A model whose readers pad batches may also offer
    `round_widths(multiple)`, which `mtl serve` calls to keep the shapes it meets few (bounded memory)."""

    task_names: list[str]

    def predict(self, texts: list[Any], tasks: Sequence[str] | None = None,
                batch_size: int = 32) -> list[dict[str, Any]]:
        """One record per text (`{"text": ..., head key: decoded, ...}`), as `mtl predict` writes it; `tasks`
        (known names, in any order) limits the records to those tasks' heads; None: every task."""

    def describe(self) -> dict[str, Any]:
        """`runtime`, `device`, `precision` and `tasks` ({task: {"reader", "heads": {head: {"key", "class",
        "label_field", "labels"}}}}) for /metadata."""


class Runtime(Protocol):
    """One way to run a model folder."""

    def fits(self, folder: Path) -> bool:
        """Whether `folder` holds what this runtime runs (`auto` picks the first runtime that fits)."""

    def load(self, folder: Path, options: LoadOptions) -> Model:
        """The folder's model, checked as `mtl.load` checks it; MtlError naming the file for a bad folder."""


@dataclass(frozen=True)
class RuntimeEntry:
    """A row of the table: `target` ("module:Class", imported when first used) and one line for --help."""

    target: str
    summary: str


RUNTIMES: dict[str, RuntimeEntry] = {
    "onnx": RuntimeEntry("mtl.serving.onnx_runtime:OnnxRuntime",
                         "model.onnx on onnxruntime (a folder written by `mtl export --onnx`)"),
    "torch": RuntimeEntry("mtl.serving.torch_runtime:TorchRuntime", "the PyTorch weights (any model folder)"),
}


def runtime_choices() -> tuple[str, ...]:
    """What `--runtime` accepts: `auto`, then the table's names."""
    return (AUTO, *RUNTIMES)


def runtime_help() -> str:
    """The `--runtime` help line, from the table."""
    names = ", ".join(RUNTIMES)
    return f"{AUTO}: the first of {names} that fits the folder; " + "; ".join(
        f"{name}: {entry.summary}" for name, entry in RUNTIMES.items())


def get_runtime(name: str) -> Runtime:
    """The runtime `name` of the table, its module imported now."""
    if name not in RUNTIMES:
        raise MtlError(f"runtime must be one of {list(runtime_choices())}, got {name!r}")
    module, _, attribute = RUNTIMES[name].target.partition(":")
    try:
        return getattr(import_module(module), attribute)()
    except ImportError as error:
        raise MtlError(f"the {name} runtime cannot be imported ({error}); pip install -e \".[serve]\"") from None


def pick_runtime(folder: str | Path, name: str = AUTO) -> tuple[str, Runtime]:
    """(name, runtime) for `folder`: the one named, or for `auto` the first of the table that fits it."""
    if name != AUTO:
        return name, get_runtime(name)
    for candidate in RUNTIMES:
        runtime = get_runtime(candidate)
        if runtime.fits(Path(folder)):
            return candidate, runtime
    raise MtlError(f"{folder}: no runtime of {list(RUNTIMES)} runs this folder")


def load_model(folder: str | Path, name: str = AUTO, options: LoadOptions | None = None) -> Model:
    """`folder`'s model on runtime `name` (`auto`: the first that fits)."""
    _, runtime = pick_runtime(folder, name)
    return runtime.load(Path(folder), options or LoadOptions())
