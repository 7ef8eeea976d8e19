"""Checkpoints: every N steps, keep the last K, always a final one; each written atomically."""
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from mtl import distributed
from mtl.errors import MtlError

log = logging.getLogger(__name__)


class Saver:
    """Decides when to save and writes folders atomically: into a temp folder, then renamed into place.

    A crash mid-save leaves the previous checkpoint intact; a reader never sees half a folder under a
    checkpoint's name. Replacing `name` takes two renames (`name` -> `.old-name`, then `.tmp-name` -> `name`);
    a crash between them leaves `.old-name`, which the next Saver on that folder puts back.

    Under torch.distributed every rank calls it alike and rank 0 alone writes (and prunes, and recovers);
    each call returns on every rank once the folder is in place, or raises on every rank when rank 0 failed.
    The others read checkpoints from the same path (load_best, resume), so on several machines `save_path`
    must be a file system they all see.
    """

    def __init__(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3) -> None:
        if save_steps is not None and save_steps < 1:
            raise ValueError(f"save_steps must be >= 1, got {save_steps}")
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0 (0 keeps every step checkpoint), got {keep_last}")
        self.save_path, self.save_steps, self.keep_last = Path(save_path), save_steps, keep_last
        if _is_main():
            self._recover()
        self.step_folders: list[Path] = sorted(self.save_path.glob("step-*"), key=_step_of)

    def _recover(self) -> None:
        """Finish a replacement a crash interrupted: `.old-name` (an mtl checkpoint, nothing else is touched)
        goes back to `name` when that is missing, and is removed when the new `name` made it."""
        for old in self.save_path.glob(".old-*"):
            if not (old / "heads.safetensors").is_file():
                continue
            target = self.save_path / old.name[len(".old-"):]
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, target)
                log.warning("%s: put back after an interrupted save", target)

    def should_save(self, step: int) -> bool:
        return self.save_steps is not None and step % self.save_steps == 0

    def save(self, name: str, write: Callable[[Path], None]) -> Path:
        """Call `write(folder)` on a temp folder, then move it to `save_path/name` in one rename."""
        if not distributed.active():
            return self._save(name, write)
        failure, target = None, self.save_path / name
        if distributed.is_main():
            try:
                self._save(name, write)
            except Exception as error:  # the other ranks must hear of it, not wait for a folder forever
                failure = error
        outcomes = distributed.gather_objects(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if outcomes[0] is not None:
            raise MtlError(f"{target}: rank 0 could not save it: {outcomes[0]}")
        return target

    def _save(self, name: str, write: Callable[[Path], None]) -> Path:
        target = self.save_path / name
        temp, trash = self.save_path / f".tmp-{name}", self.save_path / f".old-{name}"
        for leftover in (temp, trash):
            shutil.rmtree(leftover, ignore_errors=True)
        temp.mkdir(parents=True)
        try:
            write(temp)
            _fsync_tree(temp)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        if target.exists():
            os.replace(target, trash)
        os.replace(temp, target)
        _fsync_tree(self.save_path, files=False)
        shutil.rmtree(trash, ignore_errors=True)
        return target

    def save_step(self, step: int, write: Callable[[Path], None]) -> Path:
        """A `step-N` checkpoint; older ones beyond `keep_last` are removed."""
        folder = self.save(f"step-{step}", write)
        self.step_folders = [f for f in self.step_folders if f != folder] + [folder]
        while self.keep_last and len(self.step_folders) > self.keep_last:
            old = self.step_folders.pop(0)
            if _is_main():
                shutil.rmtree(old, ignore_errors=True)
        return folder


def _is_main() -> bool:
    return distributed.is_main()


def _step_of(folder: Path) -> int:
    suffix = folder.name.split("-", 1)[1]
    return int(suffix) if suffix.isdigit() else -1


def _fsync_tree(folder: Path, files: bool = True) -> None:
    """Flush a folder's files, then the folder entries, so a rename never points at unwritten data."""
    paths = [p for p in folder.rglob("*") if p.is_file()] if files else []
    for path in paths:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    for directory in [folder] + ([p for p in folder.rglob("*") if p.is_dir()] if files else []):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
