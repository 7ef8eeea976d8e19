"""Checkpoints: every N steps, keep the last K, always a final one; each written atomically."""
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


class Saver:
    """Decides when to save and writes folders atomically: into a temp folder, then renamed into place.

    A crash mid-save leaves the previous checkpoint intact; a reader never sees half a folder.
    """

    def __init__(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3) -> None:
        if save_steps is not None and save_steps < 1:
            raise ValueError(f"save_steps must be >= 1, got {save_steps}")
        self.save_path, self.save_steps, self.keep_last = Path(save_path), save_steps, keep_last
        self.step_folders: list[Path] = sorted(self.save_path.glob("step-*"), key=_step_of)

    def should_save(self, step: int) -> bool:
        return self.save_steps is not None and step % self.save_steps == 0

    def save(self, name: str, write: Callable[[Path], None]) -> Path:
        """Call `write(folder)` on a temp folder, then move it to `save_path/name` in one rename."""
        target = self.save_path / name
        temp, trash = self.save_path / f".tmp-{name}", self.save_path / f".old-{name}"
        for leftover in (temp, trash):
            shutil.rmtree(leftover, ignore_errors=True)
        temp.mkdir(parents=True)
        write(temp)
        _fsync_tree(temp)
        if target.exists():
            os.replace(target, trash)
        os.replace(temp, target)
        shutil.rmtree(trash, ignore_errors=True)
        return target

    def save_step(self, step: int, write: Callable[[Path], None]) -> Path:
        """A `step-N` checkpoint; older ones beyond `keep_last` are removed."""
        folder = self.save(f"step-{step}", write)
        self.step_folders = [f for f in self.step_folders if f != folder] + [folder]
        while self.keep_last and len(self.step_folders) > self.keep_last:
            shutil.rmtree(self.step_folders.pop(0), ignore_errors=True)
        return folder


def _step_of(folder: Path) -> int:
    suffix = folder.name.split("-", 1)[1]
    return int(suffix) if suffix.isdigit() else -1


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
