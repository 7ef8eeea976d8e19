"""The Saver: where checkpoints go and when, written atomically, kept to the last K, the best one kept; and
how a checkpoint comes back (weights, run state). The folder's format is mtl.components.savers.checkpoint."""
import copy
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Hashable

import torch
from torch import nn

from mtl import distributed
from mtl.components.savers import checkpoint, run_folder
from mtl.components.savers.checkpoint import Snapshot
from mtl.errors import MtlError

log = logging.getLogger(__name__)


class Saver:
    """Checkpoints under `save_path`: `step-N` every `save_steps` steps (the last `keep_last` kept; 0 keeps
    all), `best` (and `best-<task>`), `final`. It is given plain inputs (a model and a `Snapshot` of what goes
    beside its weights), never the trainer. `Saver.in_memory()` has no folder: it writes nothing and keeps
    the best model as a copy of its weights (what a trainer holds until `set_saver`).

    The run state (training_state.pt: the optimizer's moments, twice the model's size) goes where a resume
    reads it, `step-N` and `final`. `best` and `best-<task>` are models to load, evaluate and serve: weights,
    labels, tokenizer and model.json only, unless `keep_best_optimizer_state=True`.

    Every folder is written atomically: into a temp folder, then renamed into place. A crash mid-save leaves
    the previous checkpoint intact; a reader never sees half a folder under a checkpoint's name. Replacing
    `name` takes two renames (`name` -> `.old-name`, then `.tmp-name` -> `name`); a crash between them leaves
    `.old-name`, which the next Saver on that folder puts back.

    Folders written at the same `moment` (a token the trainer gives: one step of one train() call, when the
    weights and run state cannot have changed) share their files through hard links instead of holding copies:
    the last `step-N` and `final`, `best` and `best-<task>`, and the weights of a `best` and the `step-N` of
    the same step (mtl.components.savers.links).

    A new run (not a resume) refuses a folder that already holds a run, unless `overwrite=True`, which deletes
    the old run's checkpoints, metrics.jsonl and tensorboard/ first (`begin_run`).

    Under torch.distributed every rank calls it alike and rank 0 alone writes (and prunes, and recovers);
    each call returns on every rank once the folder is in place, or raises on every rank when rank 0 failed.
    The others read checkpoints from the same path (load_best, resume), so on several machines `save_path`
    must be a file system they all see.
    """

    def __init__(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3,
                 keep_best_optimizer_state: bool = False, overwrite: bool = False) -> None:
        if save_steps is not None and save_steps < 1:
            raise ValueError(f"save_steps must be >= 1, got {save_steps}")
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0 (0 keeps every step checkpoint), got {keep_last}")
        self.save_path = None if save_path is None else Path(save_path)
        self.save_steps, self.keep_last = save_steps, keep_last
        self.keep_best_optimizer_state, self.overwrite = keep_best_optimizer_state, overwrite
        self.begun = False  # begin_run has checked (or a resume has claimed) the folder
        self._moment: tuple[Hashable, Path, Path | None] | None = None  # see _shared
        self.best: Path | dict[str, torch.Tensor] | None = None  # the best model's folder, or its weights
        self.step_folders: list[Path] = []
        if self.save_path is not None:
            if _is_main():
                self._recover()
            self.step_folders = sorted(self.save_path.glob("step-*"), key=_step_of)

    @classmethod
    def in_memory(cls) -> "Saver":
        """A Saver without a folder: nothing is written, the best model is kept as a copy of its weights."""
        return cls(None)  # type: ignore[arg-type]

    @property
    def on_disk(self) -> bool:
        return self.save_path is not None

    def holds(self, name: str) -> bool:
        """Whether `save_path/name` is a complete checkpoint."""
        return self.on_disk and (self.save_path / name / checkpoint.HEADS).is_file()

    def _recover(self) -> None:
        """Finish a replacement a crash interrupted: `.old-name` (an mtl checkpoint, nothing else is touched)
        goes back to `name` when that is missing, and is removed when the new `name` made it."""
        for old in self.save_path.glob(".old-*"):
            if not (old / checkpoint.HEADS).is_file():
                continue
            target = self.save_path / old.name[len(".old-"):]
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, target)
                log.warning("%s: put back after an interrupted save", target)

    def begin_run(self, resuming: bool) -> None:
        """Called as train() starts: the first time, unless it resumes, the folder must not hold another run
        (its metrics.jsonl, best/ and step-N would be replaced or mixed with this one's without a word); with
        `overwrite` that run is deleted first. Later calls (the same run going on in-process) do nothing."""
        if self.begun or not self.on_disk:
            return
        if not resuming:
            self._on_main(f"{self.save_path}: rank 0 refused it", self._clear_previous_run)
            self.step_folders, self.best, self._moment = [], None, None
        self.begun = True

    def _clear_previous_run(self) -> None:
        if not self.overwrite:
            run_folder.refuse_a_run_in(self.save_path, "train(resume_from=<its step-N or final>) continues it, "
                                       "set_saver(..., overwrite=True) deletes it and starts over")
        entries = run_folder.run_entries(self.save_path)
        if entries:
            log.info("%s: deleting the previous run (%s) to start over", self.save_path, run_folder.describe(entries))
            run_folder.remove(entries)

    # ---- writing ------------------------------------------------------------------------------------------
    def should_save(self, step: int) -> bool:
        return self.on_disk and self.save_steps is not None and step % self.save_steps == 0

    def write(self, name: str | int, model: nn.Module, snapshot: Snapshot, moment: Hashable | None = None) -> Path:
        """Checkpoint `name` in `save_path`, atomically: an int is `step-N`, and step folders beyond
        `keep_last` are removed. `moment`: see the class docstring (None: every file written anew)."""
        if not isinstance(name, int):
            has_state = snapshot.run_state is not None
            same_model, same_state = self._shared(moment, has_state)
            folder = self._atomic(name, lambda temp: checkpoint.write_checkpoint(temp, model, snapshot,
                                                                                  same_model, same_state))
            self._remember(moment, folder, has_state)
            return folder
        folder = self.write(f"step-{name}", model, snapshot, moment)
        self.step_folders = [f for f in self.step_folders if f != folder] + [folder]
        while self.keep_last and len(self.step_folders) > self.keep_last:
            old = self.step_folders.pop(0)
            if _is_main():
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def _shared(self, moment: Hashable | None, has_state: bool) -> tuple[Path | None, Path | None]:
        """The folders written earlier at this `moment` whose weights (and run state) a new folder can link,
        while they are still complete on disk (else the files are written anew)."""
        if moment is None or self._moment is None or self._moment[0] != moment:
            return None, None
        _, model_folder, state_folder = self._moment
        if not (model_folder / checkpoint.HEADS).is_file():
            model_folder = None
        if not (has_state and state_folder is not None and (state_folder / checkpoint.TRAINING).is_file()):
            state_folder = None
        return model_folder, state_folder

    def _remember(self, moment: Hashable | None, folder: Path, has_state: bool) -> None:
        """The latest folder of this moment, and the latest one of it with a run state."""
        if moment is None:
            return
        same = self._moment is not None and self._moment[0] == moment
        self._moment = (moment, folder, folder if has_state else self._moment[2] if same else None)

    @classmethod
    def write_to(cls, folder: str | Path, model: nn.Module, snapshot: Snapshot) -> Path:
        """A checkpoint (or an export: a snapshot without run state) written atomically into any `folder`."""
        folder = Path(folder)
        return cls(folder.parent).write(folder.name, model, snapshot)

    def keep_best(self, model: nn.Module, snapshot: Snapshot, moment: Hashable | None = None) -> None:
        """The model is the best so far: written to `save_path/best` (without run state unless
        `keep_best_optimizer_state`), or (in memory) its weights copied."""
        if self.on_disk:
            self.best = self.write("best", model, self._best_snapshot(snapshot), moment)
        else:
            # tensors cloned; a module's extra state (a loss balancer's history) deep-copied
            self.best = {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                         for k, v in model.state_dict().items()}

    def keep_task_best(self, task: str, model: nn.Module, snapshot: Snapshot,
                       moment: Hashable | None = None) -> Path | None:
        """The model is task `task`'s best so far: `save_path/best-<task>`, like `best` (nothing in memory)."""
        if not self.on_disk:
            return None
        return self.write(f"best-{task}", model, self._best_snapshot(snapshot), moment)

    def _best_snapshot(self, snapshot: Snapshot) -> Snapshot:
        """What a best folder holds: nothing a resume needs (it resumes from step-N or final)."""
        return snapshot if self.keep_best_optimizer_state else dataclasses.replace(snapshot, run_state=None)

    def _atomic(self, name: str, write: Callable[[Path], None]) -> Path:
        """`write(folder)` on a temp folder (rank 0 alone), then moved to `save_path/name` in one rename."""
        target = self.save_path / name
        self._on_main(f"{target}: rank 0 could not save it", lambda: self._write_folder(name, write))
        return target

    @staticmethod
    def _on_main(failed: str, action: Callable[[], object]) -> None:
        """`action()` on rank 0 alone (on the one process outside torch.distributed); when it raises, every
        rank raises (the others with `failed: <the error>`), so none waits for a folder forever."""
        if not distributed.active():
            action()
            return
        failure = None
        if distributed.is_main():
            try:
                action()
            except Exception as error:  # the other ranks must hear of it
                failure = error
        outcomes = distributed.gather_objects(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if outcomes[0] is not None:
            raise MtlError(f"{failed}: {outcomes[0]}")

    def _write_folder(self, name: str, write: Callable[[Path], None]) -> Path:
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

    # ---- reading ------------------------------------------------------------------------------------------
    def load_best(self, model: nn.Module) -> None:
        """Put the best model seen by dev evaluation back into `model`."""
        if self.best is None:
            raise RuntimeError("no best model: train with eval_steps and dev readers first")
        if isinstance(self.best, dict):
            model.load_state_dict(self.best)
        else:
            self.restore_weights(self.best, model)

    @staticmethod
    def restore_weights(folder: str | Path, model: nn.Module,
                        label_names: dict[str, dict[str, list[str]]] | None = None) -> None:
        """A checkpoint's weights into an assembled model. With `label_names` (the readers' label maps), fails
        first when they are not the checkpoint's: every prediction would decode to the wrong name."""
        if label_names is not None:
            checkpoint.check_labels(folder, label_names)
        checkpoint.load_weights(folder, model)

    def load_run_state(self, folder: str | Path, task_names: list[str], total_steps: int) -> dict:
        """The run state of a step-N or final checkpoint, to go on from it; the best model this run kept in
        `save_path/best`, if any, is load_best's again. MtlError when the folder has no run state, or when it
        comes from another run plan (other tasks or another number of steps): continuing it would silently
        train something else than either run."""
        state = checkpoint.load_training_state(folder)
        if state is None:
            raise MtlError(f"{folder}: no {checkpoint.TRAINING}; only step-N and final checkpoints of a training "
                           "run can be resumed (an exported model cannot)")
        if sorted(state["tasks"]) != sorted(task_names) or state["total_steps"] != total_steps:
            raise MtlError(f"{folder}: saved by a run with tasks {sorted(state['tasks'])} and "
                           f"{state['total_steps']} steps, but this run has tasks {sorted(task_names)} and "
                           f"{total_steps} steps; resume with the same config")
        if self.on_disk and (self.save_path / "best" / checkpoint.HEADS).is_file():
            self.best = self.save_path / "best"
        return state


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
