"""MultiHeadTrainer: a shared backbone under several tasks; batches drawn across tasks by mix ratio."""
import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mtl.components.backbones.encoder import Encoder
from mtl.components.lr_schedulers.schedules import TriangularScheduler
from mtl.components.optimizers.adam import Adam
from mtl.components.readers.base import Reader
from mtl.components.savers.saver import Saver
from mtl.errors import MtlError
from mtl import distributed
from mtl.speed import SpeedKernels
from mtl.trainers import resume
from mtl.trainers.batches import batch_stream
from mtl.trainers.device import resolve_device, resolve_precision
from mtl.trainers.balancing import LossBalancer
from mtl.trainers.evaluation import decode_task, merge_task, score_task, write_jsonl
from mtl.trainers.logbook import Logbook
from mtl.trainers.model import MultiTaskModel
from mtl.trainers.sampling import MixRatioSampler, TaskSampler, plan_total_steps
from mtl.trainers.saving import CheckpointMethods
from mtl.trainers.selection import Selector
from mtl.trainers.step import RunState, Step
from mtl.trainers.trainer import Task, link_shared_heads

log = logging.getLogger(__name__)


class MultiHeadTrainer(CheckpointMethods):
    """Trains tasks that share one backbone. Both PALM's verbs and a direct constructor lead here:

        MultiHeadTrainer([Trainer("slot", reader=r1, head=h1), Trainer("intent", reader=r2, head=h2)],
                         backbone=encoder, lr=5e-5, num_epochs=10, sampling_reference="slot").train()

    Budgets follow PALM: base = N_ref // batch_size_ref, steps_t = int(num_epochs * mix_ratio_t * base);
    training stops when every non-auxiliary task has used its budget.

    Under `torchrun` (torch.distributed) the same script trains on N processes with DistributedDataParallel:
    `batch_size` stays the global batch (each process takes 1/N of each batch), so steps, schedule and weights
    are those of one process; `grad_accum_steps` cuts each process's share into that many micro-batches.
    Rank 0 alone logs and saves. See docs/distributed.md.

    `compile=True` compiles the backbone with torch.compile(dynamic=True), in place, so checkpoints keep
    their names; see docs/speed.md for that and the readers' speed switches. `embedding_grad_buffer` (on by
    default) keeps the word-embedding gradient in one buffer across steps instead of a fresh vocab x hidden
    tensor each step (same numbers; mtl.speed.grad_buffer); it is used in a single eager process only (not
    under DDP nor with `compile`). `fast_dropout` (on by default) draws the dropout masks of the model's
    nn.Dropout modules and of its attention probabilities from a cheaper random source on the CPU
    (mtl.speed.dropout). Both are on the model during train() only (mtl.speed.SpeedKernels); with both off the
    step is plain PyTorch, torch's clipping included.
    """

    def __init__(self, trainers: list[Task], backbone: Encoder | None = None, lr: float = 5e-5,
                 num_epochs: float | None = None, sampling_reference: str | None = None,
                 warmup_proportion: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
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
        self.optimizer, self.scheduler, self.saver = None, None, None
        self.total_steps, self.state = 0, RunState(skipped_steps={name: 0 for name in names})
        self.selector, self.best_folder = Selector(), None
        self._sampler_start, self._rng = None, None  # the sampler's first state; the run's RNG between calls
        self.max_nonfinite_steps, self._step = max_nonfinite_steps, None

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
        """Keep the optimizer settings; the torch optimizer is built once the step count is known."""
        self.adam = optimizer or Adam(lr=self.lr, weight_decay=self.weight_decay)
        if weight_decay is not None:
            self.adam.weight_decay = weight_decay

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

    def set_saver(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3) -> None:
        self.saver = Saver(save_path, save_steps, keep_last)

    # ---- planning ---------------------------------------------------------------------------------------
    def _ready_model(self) -> MultiTaskModel:
        return self.model if self.model is not None else self.build_forward()

    def _plan(self) -> None:
        """Budgets, the exact number of steps, then optimizer and schedule bound to that number."""
        by_name = {t.name: t for t in self.tasks}
        if self.reference not in by_name:
            raise ValueError(f"sampling_reference {self.reference!r} is not a task: {sorted(by_name)}")
        for task in self.tasks:
            if task.reader is None:
                raise ValueError(f"task {task.name!r} has no training reader")
        ref = by_name[self.reference].reader
        if self.num_epochs is None:
            self.num_epochs = ref.num_epochs  # PALM's single-task scripts give epochs to load_data
        if self.num_epochs is None:
            raise ValueError("num_epochs is not set (MultiHeadTrainer, fit_readers_with_mixratio or load_data)")
        # with token-budget batches an epoch's real batch count (epoch 0's) replaces N // batch_size
        token_budget = getattr(ref, "max_tokens", None) is not None
        base = ref.steps_per_epoch if token_budget else max(1, ref.num_examples // ref.batch_size)
        for task in self.tasks:
            task.budget = int(self.num_epochs * task.mix_ratio * base)
        self.sampler = self.sampler or MixRatioSampler([t.mix_ratio for t in self.tasks], self.seed)
        self._sampler_start = self._sampler_start or copy.deepcopy(self.sampler.state_dict())
        self.sampler.load_state_dict(copy.deepcopy(self._sampler_start))  # every plan starts where the run did
        self.total_steps = plan_total_steps(self.sampler, [t.budget for t in self.tasks],
                                            [t.is_aux for t in self.tasks])
        distributed.check_same("the run plan (steps, budgets, sampler state)",
                               (self.total_steps, [t.budget for t in self.tasks], self._sampler_start))
        model = self._ready_model()
        if self.adam is None:
            self.build_backward()
        schedule = self.adam.lr_schedule or TriangularScheduler(int(self.warmup_proportion * self.total_steps))
        schedule.bind(self.total_steps)
        if schedule.num_train_steps != self.total_steps:
            log.warning("the lr schedule counts %d steps but training runs %d (PALM's examples under-counted them; "
                        "leave num_train_steps=None to use the real number)", schedule.num_train_steps, self.total_steps)
        self.balancer.bind([f"{t.name}.{h}" for t in self.tasks for h in t.heads], base)
        self.balancer.to(self.device)  # a parameter it made on binding
        self.optimizer = self.adam.build(model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule.factor)

    # ---- training ---------------------------------------------------------------------------------------
    def train(self, print_steps: int = 10, eval_steps: int | None = None, resume_from: str | Path | None = None,
              max_steps: int | None = None, selector: Selector | None = None) -> dict[str, Any]:
        """The training loop. `eval_steps`: every N steps (and at the end) the dev readers are scored and the
        best model by `selector` (default: the mean of the tasks' `score`) kept in `save_path/best` (in memory
        without a saver); with several tasks, each task's best in `best-<task>` too; optional early stopping.
        `resume_from`: a step-N or final folder of this run: it continues exactly where that one stopped.
        `max_steps`: stop after this step, leaving a checkpoint to resume from (the schedule spans the run);
        calling train() again goes on in-process."""
        distributed.init(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded dropout, the caller's global RNG untouched
            if self.optimizer is None or self._rng is None or resume_from is not None:
                torch.manual_seed(self.seed + distributed.rank())  # rank 0 draws as a single process does
                self._plan()
            else:  # called again (after max_steps): the same run goes on, its dropout RNG too
                resume.set_rng(self, self._rng)
            self.selector = selector or self.selector
            self.selector.check_tasks([t.name for t in self.tasks])
            resumed = resume.restore(self, resume_from) if resume_from is not None else None
            # on the model for this call only, undone however it ends; no gradient buffer under DDP or compile
            # (they need autograd's embedding gradient) nor with per-loss gradients (they move the encoder's)
            kernels = SpeedKernels(self.model, fast_dropout=self.fast_dropout and not self.compile,
                                   grad_buffer=self.embedding_grad_buffer and not distributed.active()
                                   and not self.compile and not self.balancer.per_loss_gradients)
            try:
                with kernels:
                    return self._train(print_steps, eval_steps, max_steps, resumed)
            finally:
                self._rng = resume.get_rng(self)

    def _train(self, print_steps: int, eval_steps: int | None, max_steps: int | None,
               resumed: int | None) -> dict[str, Any]:
        if resumed is not None and (self.global_step >= self.total_steps or self.selector.stopped):
            log.info("the checkpoint at step %d ended its run: nothing left to train", resumed)
            return {"steps": self.global_step, "history": [], "best_score": self.best_score,
                    "stopped_early": self.selector.stopped, "finished": True,
                    "skipped_steps": dict(self.skipped_steps)}
        logbook = Logbook.for_trainer(self, self.global_step or None)  # a resumed run keeps its earlier logs
        self.ddp = distributed.wrap(self.model, self.ddp)  # copies rank 0's weights to every rank
        self._step = Step(self.model, self.ddp, self.optimizer, self.scheduler, self.device, self.precision,
                          self.adam.max_grad_norm, self.max_nonfinite_steps)
        (self.ddp if self.ddp is not None else self.model).train()
        batches = {t.name: batch_stream(t.reader, self.grad_accum_steps) for t in self.tasks}
        stop_at = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
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
                    progress.write(self._log_line(task, loss, speed))
                logbook.report(self)
            if eval_steps and (self.global_step % eval_steps == 0 or self.global_step == self.total_steps):
                history.append(self._evaluate_and_select(logbook))
            if self.saver and self.saver.should_save(self.global_step):  # after the evaluation: it holds its verdict
                self._save(self.global_step)
        progress.close()
        finished = self.global_step >= self.total_steps or self.selector.stopped
        if self.saver and finished:
            self._save("final")
        elif self.saver and not self.saver.should_save(self.global_step):
            self._save(self.global_step)  # stopped at max_steps: a point to resume from
        if not (print_steps and self.global_step % print_steps == 0):
            logbook.report(self)
        logbook.end(self.global_step, self.best_score, self.selector.stopped, finished)
        return {"steps": self.global_step, "history": history, "best_score": self.best_score,
                "stopped_early": self.selector.stopped, "finished": finished,
                "skipped_steps": dict(self.skipped_steps)}

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

    def _log_line(self, task: Task, loss: float, speed: float) -> str:
        """PALM's log line."""
        return (f"global step: {self.global_step}, {task.name}: step {task.cur_train_step}/{task.budget} "
                f"(epoch {task.reader.epoch}), loss: {loss:.3f}, speed: {speed:.2f} steps/s")

    # ---- evaluation and prediction ----------------------------------------------------------------------
    def evaluate(self, readers: dict[str, Reader] | None = None) -> dict[str, dict[str, float]]:
        """Metrics per task on the given readers, or on each task's dev reader. Under torch.distributed each
        rank decodes its shard of the examples and every rank scores all of them (the single-process metrics)."""
        distributed.init(self.device)
        model, rank, world = self._ready_model(), distributed.rank(), distributed.world_size()
        results = {}
        for task in self.tasks:
            reader = (readers or {}).get(task.name) if readers is not None else task.dev_reader
            if reader is None:
                continue
            task.check_reader(reader)
            records, metas = decode_task(model, task, reader.shard(rank, world), self.device, self.precision)
            records, metas = distributed.gather_records(records, metas)  # every rank's shard, in order
            records, metas = merge_task(task, records, metas)  # e.g. MRC windows -> one answer per question
            results[task.name] = score_task(task, records, metas)
        if not results:
            raise ValueError("nothing to evaluate: give readers or set the tasks' dev readers")
        return results

    def predict(self, task_name: str, inputs: Reader | list[str], output_file: str | Path | None = None) -> list[dict]:
        """Decoded predictions of one task (labels and spans, not ids); written as JSONL when asked."""
        task = {t.name: t for t in self.tasks}[task_name]
        reader = inputs if isinstance(inputs, Reader) else (task.reader or task.dev_reader).from_texts(inputs)
        distributed.init(self.device)
        shard = reader.shard(distributed.rank(), distributed.world_size())
        records, metas = decode_task(self._ready_model(), task, shard, self.device, self.precision)
        records, metas = distributed.gather_records(records, metas)  # every rank's shard, in order
        records, _ = merge_task(task, records, metas)  # e.g. MRC windows -> one answer per question
        if output_file is not None and distributed.is_main():
            write_jsonl(records, output_file)
        distributed.barrier()
        return records
