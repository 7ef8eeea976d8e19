"""What `mtl serve` runs: one model folder loaded by a runtime of the table (mtl.serving.runtime: torch, or
onnxruntime for an `mtl export --onnx` folder) behind one `predict(texts, tasks)` call, and the facts /metadata
reports about it (tasks, heads, label sets, runtime, version, checksum). The folder is loaded as `mtl.load`
loads it (checked whole first); nothing here reads a path that came from a request, and nothing here knows
one runtime from another."""
import logging
from pathlib import Path
from typing import Any, Sequence

from mtl.checksums import folder_checksum
from mtl.errors import MtlError
from mtl.serving.runtime import AUTO, LoadOptions, Model, pick_runtime
from mtl.version import __version__

log = logging.getLogger(__name__)


def input_forms(texts: Sequence[str]) -> tuple[list[Any], ...]:
    """The same texts in each form a reader may take: plain texts, `a<TAB>b` pairs (matching),
    question/context objects (reading comprehension)."""
    return list(texts), [f"{t}\t{t}" for t in texts], [{"question": t, "context": t} for t in texts]


def sample_inputs(readers: Sequence[Any], texts: Sequence[str]) -> list[Any] | None:
    """`texts` in the first form every reader featurizes (for tracing an export); None when no form fits all."""
    for form in input_forms(texts):
        try:
            for reader in readers:
                reader.from_texts(form)
        except Exception:  # noqa: BLE001 - not this form; try the next
            continue
        return form
    return None


class Engine:
    """A loaded model (any runtime), its batch size and its folder's checksum. `predict(texts, tasks)`
    answers with one record per text; unknown task names are refused here, whatever the runtime."""

    def __init__(self, model: Model, folder: str | Path, batch_size: int = 32) -> None:
        self.model, self.batch_size = model, batch_size
        self.runtime = model.describe()["runtime"]
        self.task_names = list(model.task_names)
        self.checksum = folder_checksum(Path(folder))

    def warm_up(self, text: str, sizes: Sequence[int]) -> None:
        """A forward at each batch size, with `text` in the first form the model takes (first calls pay for
        lazy initialisation; nothing when no form fits)."""
        for inputs in input_forms([text]):
            try:
                self.predict(inputs)
            except Exception as error:  # noqa: BLE001 - not this form (a reader refuses it); try the next
                log.debug("warm-up: %s", error)
                continue
            for size in sizes:
                self.predict(inputs * size)
            return

    def predict(self, texts: list[Any], tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
        unknown = sorted(set(tasks or ()) - set(self.task_names))
        if unknown:
            raise MtlError(f"unknown task(s) {unknown}; the model has {self.task_names}")
        return self.model.predict(texts, tasks, self.batch_size)

    def metadata(self) -> dict[str, Any]:
        """The runtime's description (runtime, device, precision, tasks and heads), version and checksum."""
        described = self.model.describe()
        return {"mtl_version": __version__, **{k: v for k, v in described.items() if k != "tasks"},
                "model_checksum": self.checksum, "tasks": described["tasks"]}


def load_engine(folder: str | Path, runtime: str = AUTO, device: str | None = None, precision: str = "auto",
                batch_size: int = 32, threads: int | None = None, *, trust_code: bool = False,
                allowed_modules: Sequence[str] | None = None, width_multiple: int | None = 16,
                beside: Sequence[str | Path] = (), base: str | Path | None = None) -> Engine:
    """The folder's model for serving on `runtime` (a name of mtl.serving.runtime.RUNTIMES, or `auto`: the
    first that fits the folder). `threads`: the runtime's intra-op threads (None: its default).
    `width_multiple`: batch widths rounded up to it (bounded memory: PredictorModel.round_widths).
    `beside`: folders of adapter tasks served with it over one encoder; `base`: the encoder of a folder of
    adapters alone."""
    options = LoadOptions(device, precision, threads, trust_code, tuple(allowed_modules or ()),
                          tuple(Path(f) for f in beside), Path(base) if base is not None else None)
    _, chosen = pick_runtime(folder, runtime)
    model = chosen.load(Path(folder), options)
    if width_multiple and hasattr(model, "round_widths"):  # a runtime without readers of its own has none
        model.round_widths(width_multiple)
    return Engine(model, folder, batch_size)
