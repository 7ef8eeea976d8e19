"""MultiHeadTrainer: a shared backbone under several tasks; batches drawn across tasks by mix ratio."""
import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mtl.components.backbones.encoder import Encoder
from mtl.components.optimizers.adam import Adam
from mtl.components.readers.base import Reader
from mtl.components.savers import Saver, Snapshot
from mtl.components.savers.checkpoint import label_names
from mtl.errors import MtlError
from mtl import distributed
from mtl.speed import SpeedKernels
from mtl.trainers import rng, run_state
from mtl.trainers.batches import batch_stream
from mtl.trainers.device import resolve_device, resolve_precision
from mtl.trainers.balancing import LossBalancer
from mtl.trainers.evaluation import decode_everywhere, evaluate_tasks, write_jsonl
from mtl.trainers.logbook import Logbook, evaluation_line
from mtl.trainers.model import MultiTaskModel
from mtl.trainers.sampling import MixRatioSampler, TaskSampler, plan_run
from mtl.trainers.selection import Selector
from mtl.trainers.step import RunState, Step
from mtl.trainers.trainer import Task, link_shared_heads

log = logging.getLogger(__name__)


class MultiHeadTrainer:
    """Trains tasks that share one backbone. Both PALM's verbs and a direct constructor lead here:

        MultiHeadTrainer([Trainer("slot", reader=r1, head=h1), Trainer("intent", reader=r2, head=h2)],
                         backbone=encoder, lr=5e-5, num_epochs=10, sampling_reference="slot").train()

    Budgets follow PALM: base = N_ref // batch_size_ref, steps_t = int(num_epochs * mix_ratio_t * base);
    training stops when every non-auxiliary task has used its budget.

    Under `torchrun` (torch.distributed) the same script trains on N processes with DistributedDataParallel:
    `batch_size` stays the global batch (each process takes 1/N of each batch), so steps, schedule and weights
    are those of one process; `grad_accum_steps` cuts each process's share into that many micro-batches.
    Rank 0 alone logs and saves. See docs/distributed.md.

    `lr` and `weight_decay` only build the default `mtl.optimizer.Adam` (None: Adam's defaults); an optimizer
    given to `build_backward` keeps its own (a trainer value that differs is ignored, with a warning).
    Checkpoints go through the trainer's one `Saver` (`set_saver`; in memory until then).

    `compile=True` compiles the backbone with torch.compile(dynamic=True), in place, so checkpoints keep
    their names; see docs/speed.md for that and the readers' speed switches. `embedding_grad_buffer` (on by
    default) keeps the word-embedding gradient in one buffer across steps instead of a fresh vocab x hidden
    tensor each step (same numbers; mtl.speed.grad_buffer); it is used in a single eager process only (not
    under DDP nor with `compile`). `fast_dropout` (on by default) draws the dropout masks of the model's
    nn.Dropout modules and of its attention probabilities from a cheaper random source on the CPU
    (mtl.speed.dropout). Both are on the model during train() only (mtl.speed.SpeedKernels); with both off the
    step is plain PyTorch, torch's clipping included.
    """

    def __init__(self, trainers: list[Task], backbone: Encoder | None = None, lr: float | None = None,
                 num_epochs: float | None = None, sampling_reference: str | None = None,
                 warmup_proportion: float = 0.1, weight_decay: float | None = None, seed: int = 0,
                 precision: str = "auto", device: str | None = None, sampler: TaskSampler | None = None,
                 log_dir: str | Path | None = None, max_nonfinite_steps: int = 5, grad_accum_steps: int = 1,
                 compile: bool = False, embedding_grad_buffer: bool = True, fast_dropout: bool = True,
                 balancer: LossBalancer | None = None) -> None:
        names = [t.name for t in trainers]
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        if max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        self.tasks, self.backbone = list(trainers), backbone
        link_shared_heads(self.tasks)  # reuse_head_with: names resolved, shared heads found up front
        self.lr, self.num_epochs, self.reference = lr, num_epochs, sampling_reference or names[0]
        self.warmup_proportion, self.weight_decay, self.seed = warmup_proportion, weight_decay, seed
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.sampler, self.log_dir = sampler, log_dir
        self.balancer = balancer or LossBalancer()
        self.model: MultiTaskModel | None = None
        self.ddp, self.grad_accum_steps = None, grad_accum_steps  # the model in DistributedDataParallel, if any
        self.compile = compile  # torch.compile the backbone (dynamic shapes: no recompile per batch width)
        self.embedding_grad_buffer, self.fast_dropout = embedding_grad_buffer, fast_dropout
        self.adam: Adam | None = None
        self.optimizer, self.scheduler, self.saver = None, None, Saver.in_memory()
        self.total_steps, self.state = 0, RunState(skipped_steps={name: 0 for name in names})
        self.selector = Selector()
        self._sampler_start, self._rng = None, None  # the sampler's first state; the run's RNG between calls
        self.max_nonfinite_steps, self._step = max_nonfinite_steps, None
        self._calls = 0  # train() calls: with the step, the moment a checkpoint is saved at (see _moment)

    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def skipped_steps(self) -> dict[str, int]:
        """Steps skipped for a non-finite loss or gradient norm, per task."""
        return self.state.skipped_steps

    # ---- PALM verbs -----------------------------------------------------------------------------------
    def build_forward(self) -> MultiTaskModel:
        """Join the tasks' heads over the one shared backbone; returns PALM's `loss_var` (the model)."""
        backbones = {id(t.backbone): t.backbone for t in self.tasks if t.backbone is not None}
        if self.backbone is not None:
            backbones.setdefault(id(self.backbone), self.backbone)
        if len(backbones) != 1:
            raise ValueError(f"tasks must share exactly one backbone, found {len(backbones)}")
        self.backbone = next(iter(backbones.values()))
        for task in self.tasks:
            task.build_forward(self.backbone)
        self.model = MultiTaskModel(self.backbone, {t.name: t.heads for t in self.tasks},
                                    self.balancer).to(self.device)
        if self.compile:
            # in place (nn.Module.compile): parameter names and checkpoints stay those of the eager model
            self.backbone.compile(dynamic=True)
        return self.model

    def build_backward(self, optimizer: Adam | None = None, weight_decay: float | None = None) -> None:
        """Keep the optimizer (the torch one is built once the step count is known); `weight_decay` is set on
        it (PALM's verb). Without one, an Adam from this trainer's `lr` and `weight_decay`."""
        given = {"lr": self.lr, "weight_decay": self.weight_decay}
        if optimizer is None:
            optimizer = Adam(**{name: value for name, value in given.items() if value is not None})
        ignored = [f"{name}={value} (the optimizer's: {getattr(optimizer, name)})" for name, value in given.items()
                   if value is not None and value != getattr(optimizer, name)]
        if ignored:  # the optimizer is the one home of its settings
            warnings.warn(f"MultiHeadTrainer {', '.join(ignored)} is not used: the optimizer given to build_backward "
                          "has its own settings, and they win (give lr and weight_decay to mtl.optimizer.Adam)",
                          UserWarning, stacklevel=2)
        if weight_decay is not None:
            optimizer.weight_decay = weight_decay
        self.adam = optimizer

    def fit_readers_with_mixratio(self, readers: list[Reader], sampling_reference: str,
                                  num_epochs: float) -> None:
        """Attach one training reader per task (in order) and set the budgets' reference and epochs."""
        if len(readers) != len(self.tasks):
            raise ValueError(f"got {len(readers)} readers for {len(self.tasks)} tasks")
        for task, reader in zip(self.tasks, readers):
            task.fit_reader(reader)
        self.reference, self.num_epochs = sampling_reference, num_epochs

    def load_pretrain(self, pretrain_dir: str | Path) -> None:
        """Load pretrained encoder weights from an HF folder (a no-op in effect after from_pretrained)."""
        self._ready_model().backbone.load_weights(pretrain_dir)

    # ---- planning ---------------------------------------------------------------------------------------
    def _ready_model(self) -> MultiTaskModel:
        return self.model if self.model is not None else self.build_forward()

    def _plan(self) -> None:
        """Budgets, the exact number of steps, then optimizer and schedule bound to that number."""
        self.sampler = self.sampler or MixRatioSampler([t.mix_ratio for t in self.tasks], self.seed)
        self._sampler_start = self._sampler_start or copy.deepcopy(self.sampler.state_dict())
        self.sampler.load_state_dict(copy.deepcopy(self._sampler_start))  # every plan starts where the run did
        plan = plan_run(self.tasks, self.reference, self.num_epochs, self.sampler)
        self.num_epochs, self.total_steps = plan.num_epochs, plan.total_steps
        for task, budget in zip(self.tasks, plan.budgets):
            task.budget = budget
        distributed.check_same("the run plan (steps, budgets, sampler state)",
                               (self.total_steps, plan.budgets, self._sampler_start))
        model = self._ready_model()
        if self.adam is None:
            self.build_backward()
        self.balancer.bind([f"{t.name}.{h}" for t in self.tasks for h in t.heads], plan.base)
        self.balancer.to(self.device)  # a parameter it made on binding
        self.optimizer = self.adam.build(model)
        self.scheduler = self.adam.build_schedule(self.optimizer, self.total_steps, self.warmup_proportion)

    # ---- training ---------------------------------------------------------------------------------------
    def train(self, print_steps: int = 10, eval_steps: int | None = None, resume_from: str | Path | None = None,
              max_steps: int | None = None, selector: Selector | None = None) -> dict[str, Any]:
        """The training loop. `eval_steps`: every N steps (and at the end) the dev readers are scored and the
        best model by `selector` (default: the mean of the tasks' `score`) kept in `save_path/best` (in memory
        without a saver); with several tasks, each task's best in `best-<task>` too; optional early stopping.
        `resume_from`: a step-N or final folder of this run: it continues exactly where that one stopped.
        `max_steps`: stop after this step, leaving a checkpoint to resume from (the schedule spans the run);
        calling train() again goes on in-process. A new run refuses a save_path that holds another run
        (MtlError) unless the saver was set with `overwrite=True`. Returns, besides the figures, `checkpoint`:
        the folder to load (`final`) or to resume from (`step-N`, when stopped by max_steps)."""
        distributed.init(self.device)
        self.saver.begin_run(resuming=resume_from is not None)
        self._calls += 1
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded dropout, the caller's global RNG untouched
            if self.optimizer is None or self._rng is None or resume_from is not None:
                torch.manual_seed(self.seed + distributed.rank())  # rank 0 draws as a single process does
                self._plan()
            else:  # called again (after max_steps): the same run goes on, its dropout RNG too
                rng.set_rng(self.device, self._rng)
            self.selector = selector or self.selector
            self.selector.check_tasks([t.name for t in self.tasks])
            resumed = self._resume(resume_from) if resume_from is not None else None
            # on the model for this call only, undone however it ends; no gradient buffer under DDP or compile
            # (they need autograd's embedding gradient) nor with per-loss gradients (they move the encoder's)
            kernels = SpeedKernels(self.model, fast_dropout=self.fast_dropout and not self.compile,
                                   grad_buffer=self.embedding_grad_buffer and not distributed.active()
                                   and not self.compile and not self.balancer.per_loss_gradients)
            try:
                with kernels:
                    return self._train(print_steps, eval_steps, max_steps, resumed)
            finally:
                self._rng = rng.get_rng(self.device)

    def _train(self, print_steps: int, eval_steps: int | None, max_steps: int | None,
               resumed: int | None) -> dict[str, Any]:
        if resumed is not None and (self.global_step >= self.total_steps or self.selector.stopped):
            log.info("the checkpoint at step %d ended its run: nothing left to train", resumed)
            if self.saver.on_disk and not self.saver.holds("final"):  # it stopped before final/ was written
                self._save("final")
            return self._outcome([], finished=True)
        logbook = Logbook.for_trainer(self, self.global_step or None)  # a resumed run keeps its earlier logs
        self.ddp = distributed.wrap(self.model, self.ddp)  # copies rank 0's weights to every rank
        self._step = Step(self.model, self.ddp, self.optimizer, self.scheduler, self.device, self.precision,
                          self.adam.max_grad_norm, self.max_nonfinite_steps)
        (self.ddp if self.ddp is not None else self.model).train()
        batches = {t.name: batch_stream(t.reader, self.grad_accum_steps) for t in self.tasks}
        stop_at = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
        logbook.start(self, print_steps, stop_at)  # the plan in one line; a warning when the cores are busy
        main = distributed.is_main()
        progress = tqdm(total=self.total_steps, initial=self.global_step, disable=None if main else True, desc="train")
        history, started, last_print = [], time.perf_counter(), self.global_step
        while self.global_step < stop_at and not self.selector.stopped:
            # 1. the sampler picks the task; 2. its reader gives the next batch (padded to its longest)
            task = self.tasks[self.sampler.draw(self.global_step)]
            batch = self._next_batch(task, batches[task.name])  # this rank's share of it, when distributed
            loss, head_losses = self._train_step(task, batch)
            self.state.global_step += 1
            task.cur_train_step += 1
            progress.update(1)
            logbook.step(self.global_step, task.name, loss, head_losses, self.scheduler.get_last_lr()[0])
            if print_steps and self.global_step % print_steps == 0:
                speed = (self.global_step - last_print) / max(time.perf_counter() - started, 1e-9)
                started, last_print = time.perf_counter(), self.global_step
                if main:
                    progress.write(logbook.console_line(self, task, loss, speed))
                logbook.report(self)
            if eval_steps and (self.global_step % eval_steps == 0 or self.global_step == self.total_steps):
                history.append(self._evaluate_and_select(logbook))
            if self.saver.should_save(self.global_step):  # after the evaluation: it holds its verdict
                self._save(self.global_step)
        progress.close()
        finished = self.global_step >= self.total_steps or self.selector.stopped
        if self.saver.on_disk and finished:
            self._save("final")
        elif self.saver.on_disk and not self.saver.should_save(self.global_step):
            self._save(self.global_step)  # stopped at max_steps: a point to resume from
        if not (print_steps and self.global_step % print_steps == 0):
            logbook.report(self)
        logbook.end(self.global_step, self.best_score, self.selector.stopped, finished)
        return self._outcome(history, finished)

    def _outcome(self, history: list[dict], finished: bool) -> dict[str, Any]:
        last = ("final" if finished else f"step-{self.global_step}") if self.saver.on_disk else None
        return {"steps": self.global_step, "history": history, "best_score": self.best_score,
                "stopped_early": self.selector.stopped, "finished": finished, "skipped_steps": dict(self.skipped_steps),
                "checkpoint": None if last is None else self.saver.save_path / last, "precision": self.precision}

    def _train_step(self, task: Task, batch: Any) -> tuple[float, dict[str, float]]:
        """3-5. forward, balanced losses, backward, clip, step: mtl.trainers.step, top to bottom."""
        return self._step(task, batch, self.state)

    @staticmethod
    def _next_batch(task: Task, batches: Any) -> Any:
        try:
            return next(batches)
        except StopIteration:
            raise MtlError(f"task {task.name!r}: its reader ran out after num_epochs={task.reader.num_epochs} "
                           "epochs before training ended; load_data(num_epochs=None) lets the trainer decide") from None

    # ---- evaluation and prediction ----------------------------------------------------------------------
    def evaluate(self, readers: dict[str, Reader] | None = None) -> dict[str, dict[str, float]]:
        """Metrics per task on the given readers, or on each task's dev reader. Under torch.distributed each
        rank decodes its shard of the examples and every rank scores all of them (the single-process metrics)."""
        distributed.init(self.device)
        readers = {t.name: t.dev_reader for t in self.tasks} if readers is None else readers
        return evaluate_tasks(self._ready_model(), self.tasks, readers, self.device, self.precision)

    def predict(self, task_name: str, inputs: Reader | list[str], output_file: str | Path | None = None) -> list[dict]:
        """Decoded predictions of one task (labels and spans, not ids); written as JSONL when asked."""
        task = {t.name: t for t in self.tasks}[task_name]
        reader = inputs if isinstance(inputs, Reader) else (task.reader or task.dev_reader).from_texts(inputs)
        distributed.init(self.device)
        records, _ = decode_everywhere(self._ready_model(), task, reader, self.device, self.precision)
        if output_file is not None and distributed.is_main():
            write_jsonl(records, output_file)
        distributed.barrier()
        return records

    def _evaluate_and_select(self, logbook: Logbook) -> dict:
        """Score the dev readers; keep the best model overall (`best`) and, with several tasks, per task.
        Every rank gets the same gathered metrics, so all reach the same verdict (and early stop together)."""
        metrics = self.evaluate()
        verdict = self.selector.update(self.global_step, metrics)
        logbook.evaluation(verdict, metrics)
        if distributed.is_main():
            log.info("%s", evaluation_line(verdict, self.selector))
        per_task = verdict.improved_tasks if self.saver.on_disk and len(self.tasks) > 1 else []
        if verdict.improved or per_task:  # best folders hold no run state unless the saver keeps it
            snapshot = self._snapshot(training=self.saver.keep_best_optimizer_state)
            if verdict.improved:
                self.saver.keep_best(self.model, snapshot, self._moment())
            for task_name in per_task:  # the same files as best/: hard links
                self.saver.keep_task_best(task_name, self.model, snapshot, self._moment())
        return {"step": self.global_step, "score": verdict.score, "metrics": metrics, "best": verdict.improved}

    @property
    def best_score(self) -> float:
        """The best selection score seen by dev evaluation (-inf before any)."""
        return self.selector.best

    # ---- checkpoints: the trainer says what its state is; its Saver writes and reads the folders ------------
    def set_saver(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3,
                  keep_best_optimizer_state: bool = False, overwrite: bool = False) -> None:
        """Checkpoints under `save_path`: `step-N` every `save_steps` steps (the last `keep_last`), `best`,
        `best-<task>`, `final`; the run state only in step-N and final (what a resume reads) unless
        `keep_best_optimizer_state`; `overwrite`: a new run deletes a run already there instead of refusing
        to start; see mtl.saver.Saver."""
        self.saver = Saver(save_path, save_steps, keep_last, keep_best_optimizer_state, overwrite)

    def save(self, folder: str | Path) -> Path:
        """Save the current model now (atomically) into `folder`, with the run state when training has started."""
        return Saver.write_to(folder, self._ready_model(), self._snapshot())

    def export(self, folder: str | Path) -> Path:
        """A deployable folder (no training state): `mtl.load(folder)` rebuilds the model with no user code."""
        return Saver.write_to(folder, self._ready_model(), self._snapshot(training=False, strict=True))

    def load_checkpoint(self, folder: str | Path) -> None:
        """Load a saved model's weights into these assembled components (e.g. in a fresh process); the
        readers' label maps must be the checkpoint's, or every prediction would decode to the wrong name."""
        Saver.restore_weights(folder, self._ready_model(), label_names(self.tasks))

    def load_best(self) -> None:
        """Restore the best model seen by dev evaluation during `train`."""
        self.saver.load_best(self.model)

    def _save(self, name: str | int) -> Path:
        """Checkpoint `name` (an int: `step-N`, pruned to the last K) in the saver's folder."""
        return self.saver.write(name, self._ready_model(), self._snapshot(), self._moment())

    def _moment(self) -> tuple[int, int]:
        """Within one train() call a step number names one set of weights and run state: checkpoints saved at
        the same moment share their files (hard links) instead of holding copies (mtl.saver.Saver)."""
        return self._calls, self.global_step

    def _snapshot(self, training: bool = True, strict: bool = False) -> Snapshot:
        """What a checkpoint holds besides the weights (mtl.trainers.run_state)."""
        self._ready_model()
        return run_state.snapshot(self, training, strict)

    def _resume(self, folder: str | Path) -> int:
        """Go on from a checkpoint of this run (after `_plan`): its weights and run state; returns its step."""
        state = self.saver.load_run_state(folder, [t.name for t in self.tasks], self.total_steps)
        Saver.restore_weights(folder, self.model)
        run_state.load_run_state(self, state)
        return self.global_step
