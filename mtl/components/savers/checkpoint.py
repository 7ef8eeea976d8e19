"""What a checkpoint folder holds and how it loads back.

    backbone/            the encoder in HF format (config.json + model.safetensors): plain transformers loads it
    adapters/<task>/     a task's LoRA adapter (adapter_config.json + adapter_model.safetensors: PEFT's layout),
                         for the tasks that have one; backbone/ then holds the encoder's own weights alone
    heads.safetensors    every task's heads, keys `task.head.param`
    labels.json          label names by id, per task and label field
    tokenizer/           the readers' tokenizer (tokenizer-<task>/ for a task whose tokenizer differs)
    model.json           how to rebuild it: backbone class, and per task its reader and heads as component specs
    trainer_state.json   step counters and the precision trained in (for people; resuming reads training_state.pt)
    training_state.pt    only where a resume reads it (step-N, final): optimizer, schedule, sampler, readers,
                         RNG, best scores; `best` holds it only with the Saver's keep_best_optimizer_state

No file needs pickle to load (training_state.pt is read with `weights_only=True`). Checkpoints saved at the
same moment of a run share their weight, tokenizer and run-state files through hard links (links.py); the
JSON files are each folder's own.
"""
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtl.components.savers.links import link_or_copy, link_tree
from mtl.errors import MtlError
from mtl.version import __version__
from mtl.spec import component_spec, dotted_path

BACKBONE, HEADS, LABELS, STATE, TRAINING, SPEC = "backbone", "heads.safetensors", "labels.json", \
    "trainer_state.json", "training_state.pt", "model.json"
ADAPTERS = "adapters"  # adapters/<task>/: a task's LoRA adapter, in PEFT's layout
READER_SUPPLIED = ("vocab_path", "phase")  # a loaded model's readers get the saved tokenizer, in phase 'predict'

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What a checkpoint holds besides the weights, as plain values (the trainer gathers them; no trainer here).

    `labels`: labels.json; `tokenizers`: folder name (`tokenizer`, `tokenizer-<task>`) -> the tokenizer saved
    there; `trainer_state`: trainer_state.json; `spec`: model.json, or None when a component's arguments are
    not plain values (`spec_problem` says why: the checkpoint saves, but mtl.load cannot rebuild it);
    `run_state`: training_state.pt, None in an export or before training starts."""

    labels: dict[str, dict[str, list[str]]]
    tokenizers: dict[str, Any]
    trainer_state: dict
    spec: dict | None = None
    spec_problem: str | None = None
    run_state: dict | None = None
    base_weights: bool = True  # False: the encoder's own weights stay out (adapters over a base kept elsewhere)

    @classmethod
    def of(cls, backbone: Any, tasks: list[Any], trainer_state: dict, run_state: dict | None = None,
           strict: bool = False, base_weights: bool = True) -> "Snapshot":
        """From the model's tasks (their readers and heads). `strict` (an export): a component that cannot be
        written as a spec raises ValueError instead of leaving model.json out. `base_weights=False`: adapters
        and heads only, over a base kept elsewhere."""
        tokenizers, tokenizer_of = tokenizer_folders(tasks)
        spec, problem = None, None
        try:
            spec = model_spec(backbone, tasks, tokenizer_of)
        except ValueError as error:
            if strict:
                raise
            problem = str(error)
        if spec is not None and not base_weights:
            spec["backbone"]["base_weights"] = False
        return cls(label_names(tasks), tokenizers, trainer_state, spec, problem, run_state, base_weights)


def label_names(tasks: list[Any]) -> dict[str, dict[str, list[str]]]:
    """labels.json: per task, its reader's label names by id for each label field."""
    return {t.name: (t.reader or t.dev_reader).label_names for t in tasks}


def write_checkpoint(folder: Path, model: nn.Module, snapshot: Snapshot, same_model: Path | None = None,
                     same_run_state: Path | None = None) -> None:
    """Weights in safetensors (no pickle), the snapshot's files beside them (see the module docstring).
    Refuses (MtlError, nothing written) when a weight is NaN or infinite: no checkpoint holds broken weights.

    `same_model`: a checkpoint written from these very weights and tokenizers (the same moment of a run):
    its weight and tokenizer files are hard-linked instead of written again; `same_run_state` likewise for
    training_state.pt (mtl.components.savers.links). The small JSON files are always written anew."""
    if same_model is None:
        check_finite(model)
        model.backbone.save(folder / BACKBONE, weights=snapshot.base_weights)
        if getattr(model.backbone, "adapters", None):
            model.backbone.save_adapters(folder / ADAPTERS)
        heads = {k: v.contiguous().cpu() for k, v in unique_state(model.heads)[0].items()}  # a shared head once
        save_file(heads, str(folder / HEADS))
        for name, tokenizer in snapshot.tokenizers.items():
            tokenizer.save_pretrained(str(folder / name))
    else:
        for name in (BACKBONE, *snapshot.tokenizers, *([ADAPTERS] if (same_model / ADAPTERS).is_dir() else [])):
            link_tree(same_model / name, folder / name)
        link_or_copy(same_model / HEADS, folder / HEADS)
    (folder / LABELS).write_text(json.dumps(snapshot.labels, indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / STATE).write_text(json.dumps(snapshot.trainer_state, indent=1), encoding="utf-8")
    if snapshot.spec is not None:
        (folder / SPEC).write_text(json.dumps(snapshot.spec, indent=1, ensure_ascii=False), encoding="utf-8")
    else:
        log.warning("%s: saved without %s, so mtl.load cannot rebuild it: %s", folder.name.removeprefix(".tmp-"),
                    SPEC, snapshot.spec_problem)
    if snapshot.run_state is not None and same_run_state is not None:
        link_or_copy(same_run_state / TRAINING, folder / TRAINING)
    elif snapshot.run_state is not None:
        torch.save(snapshot.run_state, folder / TRAINING)


def check_finite(model: torch.nn.Module) -> None:
    """MtlError naming the parameters or buffers that hold NaN or infinite values."""
    bad = [name for name, tensor in model.state_dict().items()
           if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()
           and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise MtlError(f"not saved: {len(bad)} weight tensor(s) hold NaN or infinite values ({', '.join(bad[:5])}"
                       f"{', ...' if len(bad) > 5 else ''}); the previous checkpoints are left as they were. "
                       "The model diverged: resume from the last checkpoint with a lower lr or max_grad_norm")


def tokenizer_folders(tasks: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """One `tokenizer/` for the tasks that share the first task's tokenizer, `tokenizer-<task>/` for others
    (say, a reader that does not lowercase): folder -> tokenizer, and task -> folder."""
    folders: dict[str, Any] = {}
    of_task, seen = {}, {}
    for task in tasks:
        tokenizer = (task.reader or task.dev_reader).tokenizer
        text = tokenizer.backend_tokenizer.to_str()
        if text not in seen:
            seen[text] = "tokenizer" if not folders else f"tokenizer-{task.name}"
            folders[seen[text]] = tokenizer
        of_task[task.name] = seen[text]
    return folders, of_task


def model_spec(backbone: Any, tasks: list[Any], tokenizer_of: dict[str, str]) -> dict:
    """model.json: the component spec of every task's reader and heads, so `mtl.load` rebuilds the model
    with no user code. Raises ValueError when a component's arguments are not plain values."""
    return {"format": 1, "mtl_version": __version__,
            "backbone": {"_component_": dotted_path(type(backbone)), "folder": BACKBONE, **_adapters_spec(backbone)},
            "tasks": [{"name": task.name, "tokenizer": tokenizer_of[task.name],
                       "reader": component_spec(task.reader or task.dev_reader, skip=READER_SUPPLIED),
                       **_heads_spec(task)} for task in tasks]}


def _adapters_spec(backbone: Any) -> dict:
    """model.json's record of the encoder's LoRA adapters: their settings, where they are, and the checksum of
    the base weights they were trained over (nothing for an encoder without adapters)."""
    adapters = getattr(backbone, "adapters", None)
    if not adapters:
        return {}
    return {"adapters": {name: {"lora": lora.spec(), "folder": f"{ADAPTERS}/{name}"} for name, lora in adapters.items()},
            "base_checksum": backbone.base_checksum(), "base_source": backbone.source}


def _heads_spec(task: Any) -> dict:
    """A task's heads as component specs; a task that reuses another's head names that task instead
    (`mtl.load` ties them again: one set of weights)."""
    if getattr(task, "head_owner", None) is not None:
        return {"reuse_head_with": task.head_owner.name, "heads": {}}
    return {"heads": {name: component_spec(head) for name, head in task.heads.items()}}


def load_weights(folder: str | Path, model: nn.Module) -> dict:
    """Load backbone and head weights into an already assembled model; returns the saved trainer state."""
    folder = Path(folder)
    if not (folder / HEADS).is_file():
        raise FileNotFoundError(f"{folder}: not an mtl checkpoint (no {HEADS})")
    backbone_file = folder / BACKBONE / "model.safetensors"
    adapters = getattr(model.backbone, "adapters", None)
    _load_exactly(model.backbone.model, backbone_file, model.backbone.base_names() if adapters else None)
    for name in adapters or ():
        model.backbone.load_adapter_weights(name, folder / ADAPTERS / name)
    load_heads(model, folder)
    return json.loads((folder / STATE).read_text(encoding="utf-8"))


def read_labels(folder: str | Path) -> dict[str, dict[str, list[str]]]:
    """labels.json of a checkpoint: per task, per label field, the label names by id; MtlError naming the
    file when it is missing or not that shape."""
    path = Path(folder) / LABELS
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MtlError(f"{folder}: not an mtl checkpoint (no {LABELS}); give the run's best/ or final/ "
                       "folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MtlError(f"{path}: cannot be read: {error}") from None
    if not labels_shape_ok(labels):
        raise MtlError(f"{path}: expected {{task: {{label field: [label name, ...]}}}}")
    return labels


def labels_shape_ok(labels: Any) -> bool:
    """Whether a parsed labels.json is {task: {label field: [label name, ...]}}."""
    return isinstance(labels, dict) and all(isinstance(fields, dict) and all(
        isinstance(names, list) and all(isinstance(n, str) for n in names) for names in fields.values())
        for fields in labels.values())


def check_labels(folder: str | Path, label_names: dict[str, dict[str, list[str]]]) -> None:
    """Fail, naming the task, field and first differing label, when the readers' label maps are not the ones
    the checkpoint was trained with (ids would decode to the wrong names, silently)."""
    path = Path(folder) / LABELS
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    for task, fields in label_names.items():
        for field, names in fields.items():
            kept = saved.get(task, {}).get(field)
            if kept is not None and kept != names:
                index = next((i for i, (a, b) in enumerate(zip(kept, names)) if a != b), min(len(kept), len(names)))
                raise MtlError(f"{path}: task {task!r} {field}: the checkpoint's label map differs from the reader's "
                               f"at id {index} ({_at(kept, index)} vs {_at(names, index)}; {len(kept)} vs "
                               f"{len(names)} labels); build the reader with the checkpoint's labels "
                               f"(labels.json)")


def _at(names: list[str], index: int) -> str:
    return repr(names[index]) if index < len(names) else "none"


def load_heads(model: nn.Module, folder: Path) -> None:
    _load_exactly(model.heads, folder / HEADS)


def load_heads_of(heads: nn.ModuleDict, tasks: list[str], file: Path) -> None:
    """The heads of `tasks` (some of a model's tasks: one folder's, when several are served together) from
    their heads.safetensors."""
    _load_exactly(nn.ModuleDict({task: heads[task] for task in tasks}), file)


def load_training_state(folder: str | Path) -> dict | None:
    """The run state, unpickled with `weights_only=True`: tensors and plain containers only, no code runs."""
    path = Path(folder) / TRAINING
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        raise MtlError(f"{path}: refused to load: it holds objects other than tensors and plain containers, and "
                       "unpickling them could run code (mtl loads it with torch.load(weights_only=True)). mtl never "
                       f"writes such a file; do not resume from a folder you do not trust. ({str(error)[:200]})") from None


def latest_checkpoint(save_path: str | Path) -> Path | None:
    """The checkpoint with the most steps done among `step-N` and `final` (what `--resume` continues)."""
    candidates = []
    for folder in Path(save_path).glob("*"):
        if (folder.name.startswith("step-") or folder.name == "final") and (folder / TRAINING).is_file():
            state = json.loads((folder / STATE).read_text(encoding="utf-8"))
            candidates.append((state["global_step"], folder.name == "final", folder))
    return max(candidates)[2] if candidates else None


def _load_exactly(module: torch.nn.Module, file: Path, rename: dict[str, str] | None = None) -> None:
    """Load a safetensors file whose keys must match the module's exactly: a mismatch is a wrong model.
    The second names of a tensor the module shares (a head reused by another task) are not in the file:
    loading the first name fills both. `rename`: the file's names -> the module's (an encoder whose layers
    carry adapters holds its own weights under other names); the module's names it leaves out are not
    expected in the file."""
    state = load_file(str(file))
    if rename is not None:
        state = {rename.get(key, key): tensor for key, tensor in state.items()}
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches: name the file, not torch's internals
        raise ValueError(f"{file}: weights do not fit the assembled model: {str(error)[:500]}") from None
    missing = sorted(set(result.missing_keys) - set(unique_state(module)[1])
                     - (set() if rename is None else set(module.state_dict()) - set(rename.values())))
    if missing or result.unexpected_keys:
        raise ValueError(f"{file}: weights do not match the assembled model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def unique_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict with each tensor once, under its first name, and the names left out (aliases).

    A head shared by two tasks (`reuse_head_with`) is one set of weights reachable under both tasks' names:
    it is saved once (safetensors refuses a tensor twice) and tied again by the model it is loaded into."""
    kept: dict[str, torch.Tensor] = {}
    aliases: list[str] = []
    seen: set[int] = set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.append(name)
            continue
        seen.add(id(tensor))
        kept[name] = tensor.detach()
    return kept, aliases
