"""A run folder as a whole: which of its entries a training run wrote, so that a new run neither mixes with
them nor silently replaces them; and, when a run ends, which folder to use next.

A run writes `step-N/`, `final/`, `best/`, `best-<task>/` (mtl checkpoints: they hold heads.safetensors),
`.tmp-<name>/` and `.old-<name>/` (a save in progress or interrupted), `metrics.jsonl` and `tensorboard/`.
Only those are counted or removed: anything else a user keeps in the folder is left alone.
"""
import shutil
from pathlib import Path
from typing import Any

from mtl.components.savers.checkpoint import HEADS
from mtl.errors import MtlError

LOG_FILE, BOARD = "metrics.jsonl", "tensorboard"


def run_entries(save_path: Path) -> list[Path]:
    """What a training run left in `save_path`, sorted by name (empty when there is no such folder)."""
    if not save_path.is_dir():
        return []
    return sorted((entry for entry in save_path.iterdir() if _written_by_a_run(entry)), key=lambda p: p.name)


def refuse_a_run_in(save_path: Path, how: str) -> None:
    """MtlError when `save_path` holds a training run: starting another one there would replace its
    metrics.jsonl and checkpoints, or mix with them, without a word. `how` says how to go on or start over."""
    entries = run_entries(Path(save_path))
    if entries:
        raise MtlError(f"{save_path}: already holds a training run ({describe(entries)}); {how}")


def closing_line(result: dict[str, Any], total_steps: int, best: Path) -> str:
    """The last line of `mtl train`: the steps, the precision they ran in, and the folder to use next: `final`
    when the run finished, or the `step-N` to resume from when max_steps stopped it (there is no final/ then).
    `result` is MultiHeadTrainer.train's (steps, precision, checkpoint, ...); `best` the run's best/ folder,
    named when it exists."""
    if result["finished"]:
        line = (f"trained {result['steps']} steps in {result['precision']}"
                f"{' (stopped early)' if result['stopped_early'] else ''}; final model: {result['checkpoint']}")
    else:
        line = (f"stopped by max_steps after {result['steps']} of {total_steps} steps ({result['precision']}); "
                f"resume from {result['checkpoint']} (mtl train --resume), no final model yet")
    return line + (f"; best (score {result['best_score']:.2f}): {best}" if best.is_dir() else "")


def describe(entries: list[Path], shown: int = 4) -> str:
    """`best/, final/, metrics.jsonl and 3 more`: a short list for a one-line message."""
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in entries]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def remove(entries: list[Path]) -> None:
    """Delete a previous run's entries (folders and files); hard-linked files lose one name each."""
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def _written_by_a_run(entry: Path) -> bool:
    name = entry.name
    if name == LOG_FILE:
        return entry.is_file()
    if not entry.is_dir():
        return False
    if name.startswith((".tmp-", ".old-")):
        return True
    if name == BOARD:  # TensorBoard's event files and nothing else
        return all(p.is_dir() or p.name.startswith("events.out.tfevents") for p in entry.rglob("*"))
    is_checkpoint_name = name in ("final", "best") or name.startswith(("step-", "best-"))
    return is_checkpoint_name and (entry / HEADS).is_file()
