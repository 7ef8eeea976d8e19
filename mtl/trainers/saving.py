"""MultiHeadTrainer's checkpoints and model selection: save, export, load, keep and restore the best model.

A mixin only to keep `multi_head.py` (the loop) short; it relies on the trainer's `model`, `tasks`, `saver`,
`selector`, `optimizer` and `_ready_model`. Under torch.distributed every rank makes the same calls (each
rank's dropout RNG is gathered into the checkpoint), and rank 0 alone writes (`Saver`).
"""
import logging
import math
from pathlib import Path
from typing import Any

from mtl.components.savers.saver import Saver
from mtl.components.savers import checkpoint
from mtl.trainers import resume
from mtl.trainers.logbook import Logbook

log = logging.getLogger(__name__)


class CheckpointMethods:
    """Saving, loading and best-model selection of a MultiHeadTrainer."""

    model: Any
    tasks: list
    saver: Saver | None
    best_folder: Any

    def _evaluate_and_select(self, logbook: Logbook) -> dict:
        """Score the dev readers; keep the best model overall (`best`) and, with several tasks, per task.
        Every rank gets the same gathered metrics, so all reach the same verdict (and early stop together)."""
        metrics = self.evaluate()
        verdict = self.selector.update(self.global_step, metrics)
        logbook.evaluation(verdict, metrics)
        if verdict.improved:
            self._keep_best()
        if self.saver and len(self.tasks) > 1:
            for task_name in verdict.improved_tasks:
                self._save(f"best-{task_name}")
        return {"step": self.global_step, "score": verdict.score, "metrics": metrics, "best": verdict.improved}

    @property
    def best_score(self) -> float:
        """The best selection score seen by dev evaluation (-inf before any)."""
        return self.selector.best

    def _keep_best(self) -> None:
        if self.saver:
            self.best_folder = self._save("best")
        else:
            self.best_folder = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_best(self) -> None:
        """Restore the best model seen by dev evaluation during `train`."""
        if self.best_folder is None:
            raise RuntimeError("no best model: train with eval_steps and dev readers first")
        if isinstance(self.best_folder, dict):
            self.model.load_state_dict(self.best_folder)
        else:
            self.load_checkpoint(self.best_folder)

    def _save(self, name: str | int, saver: Saver | None = None) -> Path:
        """Checkpoint `name` (an int: `step-N`, pruned to the last K) with the trainer's saver (or `saver`)."""
        saver, rank_rngs = saver or self.saver, resume.gather_rng(self)

        def write(folder: Path) -> None:
            self._write(folder, rank_rngs=rank_rngs)
        return saver.save_step(name, write) if isinstance(name, int) else saver.save(name, write)

    def _write(self, folder: Path, training: bool = True, strict: bool = False,
               rank_rngs: list[dict] | None = None) -> None:
        """A checkpoint (with the run state once training has started) or, with training=False, an export."""
        self._ready_model()
        run_state = resume.training_state(self, rank_rngs) if training and self.optimizer is not None else None
        write_trainer(folder, self, run_state, strict)

    def save(self, folder: str | Path) -> Path:
        """Save the current model now (atomically) into `folder`, with the run state when training has started."""
        folder = Path(folder)
        return self._save(folder.name, Saver(folder.parent))

    def export(self, folder: str | Path) -> Path:
        """A deployable folder (no training state): `mtl.load(folder)` rebuilds the model with no user code."""
        folder = Path(folder)
        return Saver(folder.parent).save(folder.name, lambda f: self._write(f, training=False, strict=True))

    def load_checkpoint(self, folder: str | Path) -> None:
        """Load a saved model's weights into these assembled components (e.g. in a fresh process); the
        readers' label maps must be the checkpoint's, or every prediction would decode to the wrong name."""
        checkpoint.check_labels(folder, {t.name: (t.reader or t.dev_reader).label_names for t in self.tasks})
        checkpoint.load_weights(folder, self._ready_model())


def write_trainer(folder: Path, trainer: Any, run_state: dict | None, strict: bool) -> None:
    """Everything a MultiHeadTrainer's checkpoint holds. Without a model spec (a component whose arguments
    are not plain values) a checkpoint still saves, with a warning; an export (`strict`) fails."""
    model, tasks = trainer.model, trainer.tasks
    state = {"global_step": trainer.global_step, "total_steps": trainer.total_steps,
             "best_score": trainer.best_score if math.isfinite(trainer.best_score) else None,
             "tasks": {t.name: {"cur_train_step": t.cur_train_step, "budget": t.budget} for t in tasks}}
    tokenizers, tokenizer_of = checkpoint.tokenizer_folders(tasks)
    try:
        spec = checkpoint.model_spec(model.backbone, tasks, tokenizer_of)
    except ValueError as error:
        if strict:
            raise
        log.warning("%s: saved without %s, so mtl.load cannot rebuild it: %s", folder.name.removeprefix(".tmp-"),
                    checkpoint.SPEC, error)
        spec = None
    labels = {t.name: (t.reader or t.dev_reader).label_names for t in tasks}
    checkpoint.write_checkpoint(folder, model, labels, tokenizers, state, run_state, spec)
