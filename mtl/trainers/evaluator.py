"""A MultiHeadTrainer's evaluation and selection: each task scored on its dev reader (mtl.trainers.evaluation),
predictions decoded, and during training the best model by the run's Selector kept."""
import logging
from pathlib import Path
from typing import Any

from mtl import distributed
from mtl.components.readers.base import Reader
from mtl.trainers.evaluation import decode_everywhere, evaluate_tasks, write_jsonl
from mtl.trainers.logbook import Logbook, evaluation_line

log = logging.getLogger(__name__)


class Evaluator:
    """Evaluates, predicts and selects for one trainer (a MultiHeadTrainer), reading its tasks, model,
    device, precision and `selector`, and keeping the best through its checkpoints."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def evaluate(self, readers: dict[str, Reader] | None = None) -> dict[str, dict[str, float]]:
        """See MultiHeadTrainer.evaluate."""
        trainer = self.trainer
        distributed.init(trainer.device)
        readers = {t.name: t.dev_reader for t in trainer.tasks} if readers is None else readers
        return evaluate_tasks(trainer._ready_model(), trainer.tasks, readers, trainer.device, trainer.precision)

    def predict(self, task_name: str, inputs: Reader | list[str], output_file: str | Path | None = None) -> list[dict]:
        """See MultiHeadTrainer.predict."""
        trainer = self.trainer
        task = {t.name: t for t in trainer.tasks}[task_name]
        reader = inputs if isinstance(inputs, Reader) else (task.reader or task.dev_reader).from_texts(inputs)
        distributed.init(trainer.device)
        records, _ = decode_everywhere(trainer._ready_model(), task, reader, trainer.device, trainer.precision)
        if output_file is not None and distributed.is_main():
            write_jsonl(records, output_file)
        distributed.barrier()
        return records

    def evaluate_and_select(self, logbook: Logbook) -> dict:
        """Score the dev readers; keep the best model overall (`best`) and, with several tasks, per task.
        Every rank gets the same gathered metrics, so all reach the same verdict (and early stop together)."""
        trainer = self.trainer
        metrics = trainer.evaluate()
        verdict = trainer.selector.update(trainer.global_step, metrics)
        logbook.evaluation(verdict, metrics)
        if distributed.is_main():
            log.info("%s", evaluation_line(verdict, trainer.selector))
        per_task = verdict.improved_tasks if trainer.saver.on_disk and len(trainer.tasks) > 1 else []
        if verdict.improved or per_task:
            trainer.checkpoints.keep_best(verdict.improved, per_task)
        return {"step": trainer.global_step, "score": verdict.score, "metrics": metrics, "best": verdict.improved}
