"""A MultiHeadTrainer's training loop: one explicit loop over steps (1. the sampler picks the task, 2. its
reader gives the batch, 3-5. the step body of mtl.trainers.step), then evaluation and checkpoints when due."""
import logging
import random
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm import tqdm

from mtl import distributed
from mtl.errors import MtlError
from mtl.model.device import autocast, to_device
from mtl.speed import SpeedKernels
from mtl.trainers import rng
from mtl.trainers.batches import batch_stream
from mtl.trainers.logbook import Logbook
from mtl.trainers.selection import Selector
from mtl.trainers.step import Step
from mtl.trainers.task import Task

log = logging.getLogger(__name__)


class Loop:
    """Trains one trainer (a MultiHeadTrainer): plans it (its `planner`), runs the steps through the trainer's
    `_train_step`, evaluates through its `evaluator` and saves through its `checkpoints`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.rng: dict | None = None  # the run's RNG between train() calls
        self.step: Step | None = None

    def train(self, print_steps: int, eval_steps: int | None, resume_from: str | Path | None,
              max_steps: int | None, selector: Selector | None) -> dict[str, Any]:
        """See MultiHeadTrainer.train."""
        trainer = self.trainer
        distributed.init(trainer.device)
        trainer.saver.begin_run(resuming=resume_from is not None)
        trainer.checkpoints.calls += 1
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded dropout, the caller's global RNG untouched
            if trainer.optimizer is None or self.rng is None or resume_from is not None:
                torch.manual_seed(trainer.seed + distributed.rank())  # rank 0 draws as a single process does
                trainer._plan()
            else:  # called again (after max_steps): the same run goes on, its dropout RNG too
                rng.set_rng(trainer.device, self.rng)
            trainer.selector = selector or trainer.selector
            trainer.selector.check_tasks([t.name for t in trainer.tasks])
            resumed = trainer.checkpoints.resume(resume_from) if resume_from is not None else None
            # on the model for this call only, undone however it ends; no gradient buffer under DDP or compile
            # (they need autograd's embedding gradient) nor with per-loss gradients (they move the encoder's)
            kernels = SpeedKernels(trainer.model, fast_dropout=trainer.fast_dropout and not trainer.compile,
                                   grad_buffer=trainer.embedding_grad_buffer and not distributed.active()
                                   and not trainer.compile and not trainer.balancer.per_loss_gradients)
            try:
                with kernels:
                    return self.run(print_steps, eval_steps, max_steps, resumed, kernels)
            finally:
                self.rng = rng.get_rng(trainer.device)

    def run(self, print_steps: int, eval_steps: int | None, max_steps: int | None, resumed: int | None,
            kernels: SpeedKernels) -> dict[str, Any]:
        """The steps of one train() call, from the trainer's global step to `max_steps` or the end."""
        trainer = self.trainer
        if resumed is not None and (trainer.global_step >= trainer.total_steps or trainer.selector.stopped):
            log.info("the checkpoint at step %d ended its run: nothing left to train", resumed)
            if trainer.saver.on_disk and not trainer.saver.holds("final"):  # it stopped before final/ was written
                trainer.checkpoints.save("final")
            return self.outcome([], finished=True)
        logbook = Logbook.for_trainer(trainer, trainer.global_step or None)  # a resumed run keeps its earlier logs
        trainer.ddp = distributed.wrap(trainer.model, trainer.ddp)  # copies rank 0's weights to every rank
        self.step = Step(trainer.model, trainer.ddp, trainer.optimizer, trainer.scheduler, trainer.device,
                         trainer.precision, trainer.adam.max_grad_norm, trainer.max_nonfinite_steps,
                         kernels.clipped_step)
        (trainer.ddp if trainer.ddp is not None else trainer.model).train()
        batches = {t.name: batch_stream(t.reader, trainer.grad_accum_steps) for t in trainer.tasks}
        stop_at = min(trainer.total_steps, max_steps) if max_steps is not None else trainer.total_steps
        logbook.start(trainer, print_steps, stop_at)  # the plan in one line; a warning when the cores are busy
        main = distributed.is_main()
        progress = tqdm(total=trainer.total_steps, initial=trainer.global_step, disable=None if main else True,
                        desc="train")
        history, started, last_print = [], time.perf_counter(), trainer.global_step
        probes = ({t.name: probe_batches(t.reader, trainer.affinity.probe_size) for t in trainer.tasks}
                  if trainer.affinity and main else None)
        while trainer.global_step < stop_at and not trainer.selector.stopped:
            # 1. the sampler picks the task; 2. its reader gives the next batch (padded to its longest)
            task = trainer.tasks[trainer.sampler.draw(trainer.global_step)]
            batch = self.next_batch(task, batches[task.name])  # this rank's share of it, when distributed
            loss, head_losses = trainer._train_step(task, batch)  # 3-5. mtl.trainers.step, top to bottom
            trainer.state.global_step += 1
            task.cur_train_step += 1
            progress.update(1)
            logbook.step(trainer.global_step, task.name, loss, head_losses, trainer.scheduler.get_last_lr()[0])
            if print_steps and trainer.global_step % print_steps == 0:
                speed = (trainer.global_step - last_print) / max(time.perf_counter() - started, 1e-9)
                started, last_print = time.perf_counter(), trainer.global_step
                if main:
                    progress.write(logbook.console_line(trainer, task, loss, speed))
                logbook.report(trainer)
            if probes is not None and trainer.affinity.due(trainer.global_step):
                with kernels.autograd_only():
                    self.estimate_affinity(logbook, probes)
            if eval_steps and (trainer.global_step % eval_steps == 0 or trainer.global_step == trainer.total_steps):
                history.append(trainer.evaluator.evaluate_and_select(logbook))
            if trainer.saver.should_save(trainer.global_step):  # after the evaluation: it holds its verdict
                trainer.checkpoints.save(trainer.global_step)
        progress.close()
        return self.finish(logbook, history, print_steps)

    def estimate_affinity(self, logbook: Logbook, probes: dict[str, Iterator[dict]]) -> None:
        """One task-affinity estimate on one batch per task (read apart from training: the readers' positions
        and the run's RNG do not move), timed, logged."""
        trainer = self.trainer
        started = time.perf_counter()
        batches = {name: to_device(next(stream), trainer.device) for name, stream in probes.items()}
        record = trainer.affinity.estimate(trainer.model, batches, trainer.optimizer, trainer.global_step,
                                           autocast=lambda: autocast(trainer.device, trainer.precision))
        record["seconds"] = time.perf_counter() - started
        trainer.affinity.seconds += record["seconds"]
        logbook.affinity(record)

    def finish(self, logbook: Logbook, history: list[dict], print_steps: int) -> dict[str, Any]:
        """After the last step of a call: `final` when the run is over, else a point to resume from."""
        trainer = self.trainer
        finished = trainer.global_step >= trainer.total_steps or trainer.selector.stopped
        if trainer.saver.on_disk and finished:
            trainer.checkpoints.save("final")
        elif trainer.saver.on_disk and not trainer.saver.should_save(trainer.global_step):
            trainer.checkpoints.save(trainer.global_step)  # stopped at max_steps: a point to resume from
        if not (print_steps and trainer.global_step % print_steps == 0):
            logbook.report(trainer)
        logbook.end(trainer.global_step, trainer.best_score, trainer.selector.stopped, finished)
        return self.outcome(history, finished)

    def outcome(self, history: list[dict], finished: bool) -> dict[str, Any]:
        trainer = self.trainer
        last = ("final" if finished else f"step-{trainer.global_step}") if trainer.saver.on_disk else None
        return {"steps": trainer.global_step, "history": history, "best_score": trainer.best_score,
                "stopped_early": trainer.selector.stopped, "finished": finished,
                "skipped_steps": dict(trainer.skipped_steps),
                "checkpoint": None if last is None else trainer.saver.save_path / last, "precision": trainer.precision,
                **({"affinity_seconds": trainer.affinity.seconds} if trainer.affinity else {})}

    @staticmethod
    def next_batch(task: Task, batches: Any) -> Any:
        try:
            return next(batches)
        except StopIteration:
            raise MtlError(f"task {task.name!r}: its reader ran out after num_epochs={task.reader.num_epochs} "
                           "epochs before training ended; load_data(num_epochs=None) lets the trainer decide") from None


def probe_batches(reader: Any, size: int | None = None) -> Iterator[dict]:
    """Batches of `size` examples (the reader's batch size by default) for estimates, drawn without
    replacement in an order of their own (a fixed seed, not the run's random streams), over and over: the
    training batches and the reader's epoch and position stay as they were."""
    if not reader.features:
        raise MtlError(f"task affinity draws its probe batches from the examples in memory; this "
                       f"{type(reader).__name__} streams its data file: load it without streaming to estimate")
    size, order = size or reader.batch_size, list(range(len(reader.features)))
    random.Random(0).shuffle(order)
    while True:
        for start in range(0, len(order), size):
            yield reader.collate([reader.features[i] for i in order[start:start + size]])
