"""A MultiHeadTrainer's checkpoint I/O: the trainer says what its state is (mtl.trainers.run_state), its one
Saver writes and reads the folders (mtl.components.savers)."""
from pathlib import Path
from typing import Any

from mtl.components.savers import Saver, Snapshot
from mtl.components.savers.checkpoint import label_names
from mtl.errors import MtlError
from mtl.trainers import run_state


class Checkpoints:
    """Saves, exports, loads and resumes one trainer (a MultiHeadTrainer) through `trainer.saver`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.calls = 0  # train() calls: with the step, the moment a checkpoint is saved at (see `moment`)

    def set_saver(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3,
                  keep_best_optimizer_state: bool = False, overwrite: bool = False) -> None:
        """See MultiHeadTrainer.set_saver."""
        self.trainer.saver = Saver(save_path, save_steps, keep_last, keep_best_optimizer_state, overwrite)

    def save_to(self, folder: str | Path) -> Path:
        """The current model, atomically, into `folder`, with the run state when training has started."""
        return Saver.write_to(folder, self.trainer._ready_model(), self.snapshot())

    def export(self, folder: str | Path, base: bool = True) -> Path:
        """A deployable folder (no training state) that `mtl.load` rebuilds with no user code; `base=False`:
        the tasks' adapters and heads alone (every task must have an adapter: the base is then untouched)."""
        model = self.trainer._ready_model()
        if not base:
            plain = [t.name for t in self.trainer.tasks if t.name not in model.backbone.adapters]
            if plain:
                raise MtlError(f"export(base=False) keeps adapters and heads only, but tasks {plain} have no adapter: "
                               "they fine-tune the encoder itself, which such a folder would not hold")
        return Saver.write_to(folder, model, run_state.snapshot(self.trainer, False, True, base_weights=base))

    def load_weights(self, folder: str | Path) -> None:
        """A saved model's weights into the assembled components; the readers' label maps must be the
        checkpoint's, or every prediction would decode to the wrong name."""
        Saver.restore_weights(folder, self.trainer._ready_model(), label_names(self.trainer.tasks))

    def load_best(self) -> None:
        self.trainer.saver.load_best(self.trainer.model)

    def save(self, name: str | int) -> Path:
        """Checkpoint `name` (an int: `step-N`, pruned to the last K) in the saver's folder."""
        return self.trainer.saver.write(name, self.trainer._ready_model(), self.snapshot(), self.moment())

    def keep_best(self, overall: bool, tasks: list[str]) -> None:
        """The best model overall (`best`) and per task (`best-<task>`, the same files: hard links); they hold
        no run state unless the saver keeps it."""
        saver, model = self.trainer.saver, self.trainer.model
        snapshot = self.snapshot(training=saver.keep_best_optimizer_state)
        if overall:
            saver.keep_best(model, snapshot, self.moment())
        for task_name in tasks:
            saver.keep_task_best(task_name, model, snapshot, self.moment())

    def moment(self) -> tuple[int, int]:
        """Within one train() call a step number names one set of weights and run state: checkpoints saved at
        the same moment share their files (hard links) instead of holding copies (mtl.saver.Saver)."""
        return self.calls, self.trainer.global_step

    def snapshot(self, training: bool = True, strict: bool = False) -> Snapshot:
        """What a checkpoint holds besides the weights (mtl.trainers.run_state)."""
        self.trainer._ready_model()
        return run_state.snapshot(self.trainer, training, strict)

    def resume(self, folder: str | Path) -> int:
        """Go on from a checkpoint of this run (after planning): its weights and run state; returns its step."""
        trainer = self.trainer
        state = trainer.saver.load_run_state(folder, [t.name for t in trainer.tasks], trainer.total_steps)
        Saver.restore_weights(folder, trainer.model)
        run_state.load_run_state(trainer, state)
        return trainer.global_step
