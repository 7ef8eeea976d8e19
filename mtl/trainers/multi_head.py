"""MultiHeadTrainer: a shared backbone under several tasks; batches drawn across tasks by mix ratio.

A thin face (PALM's verbs and the direct form) over parts with one concern each, which share the trainer's
state: the plan of model, optimizer, budgets and steps (mtl.trainers.planner), the loop
(mtl.trainers.loop, its step body in mtl.trainers.step), evaluation and selection (mtl.trainers.evaluator)
and checkpoint I/O (mtl.trainers.checkpoints)."""
from pathlib import Path
from typing import Any

from mtl.components.backbones.encoder import Encoder
from mtl.components.optimizers.adam import Adam
from mtl.components.readers.base import Reader
from mtl.components.savers import Saver, Snapshot
from mtl.model.device import resolve_device, resolve_precision
from mtl.model.multitask import MultiTaskModel
from mtl.trainers.balancing import LossBalancer
from mtl.trainers.checkpoints import Checkpoints
from mtl.trainers.evaluator import Evaluator
from mtl.trainers.loop import Loop
from mtl.trainers.affinity import AffinityEstimator
from mtl.trainers.planner import Planner
from mtl.trainers.sampling import TaskSampler
from mtl.trainers.selection import Selector
from mtl.trainers.step import RunState
from mtl.trainers.task import Task, link_shared_heads


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

    `affinity_every=N` estimates every N steps how a step for each task moves every other task's loss
    (mtl.trainers.affinity: TAG's lookahead and gradient cosine; the run itself is untouched); the matrices
    go to metrics.jsonl and TensorBoard as they evolve and are `self.affinity.tag` / `.cosine` at the end.
    Its other settings (examples per estimate, exact lookaheads): assign `trainer.affinity = AffinityEstimator(...)`.
    """

    def __init__(self, trainers: list[Task], backbone: Encoder | None = None, lr: float | None = None,
                 num_epochs: float | None = None, sampling_reference: str | None = None,
                 warmup_proportion: float = 0.1, weight_decay: float | None = None, seed: int = 0,
                 precision: str = "auto", device: str | None = None, sampler: TaskSampler | None = None,
                 log_dir: str | Path | None = None, max_nonfinite_steps: int = 5, grad_accum_steps: int = 1,
                 compile: bool = False, embedding_grad_buffer: bool = True, fast_dropout: bool = True,
                 balancer: LossBalancer | None = None, affinity_every: int | None = None) -> None:
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
        self.affinity = AffinityEstimator(affinity_every) if affinity_every else None
        self.model: MultiTaskModel | None = None
        self.ddp, self.grad_accum_steps = None, grad_accum_steps  # the model in DistributedDataParallel, if any
        self.compile = compile  # torch.compile the backbone (dynamic shapes: no recompile per batch width)
        self.embedding_grad_buffer, self.fast_dropout = embedding_grad_buffer, fast_dropout
        self.adam: Adam | None = None
        self.optimizer, self.scheduler, self.saver = None, None, Saver.in_memory()
        self.total_steps, self.state = 0, RunState(skipped_steps={name: 0 for name in names})
        self.selector, self.max_nonfinite_steps = Selector(), max_nonfinite_steps
        # the parts, each with one concern, over this trainer's state
        self.planner, self.loop = Planner(self), Loop(self)
        self.evaluator, self.checkpoints = Evaluator(self), Checkpoints(self)

    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def skipped_steps(self) -> dict[str, int]:
        """Steps skipped for a non-finite loss or gradient norm, per task."""
        return self.state.skipped_steps

    @property
    def best_score(self) -> float:
        """The best selection score seen by dev evaluation (-inf before any)."""
        return self.selector.best

    # ---- PALM verbs -----------------------------------------------------------------------------------
    def build_forward(self) -> MultiTaskModel:
        """Join the tasks' heads over the one shared backbone; returns PALM's `loss_var` (the model)."""
        return self.planner.assemble()

    def build_backward(self, optimizer: Adam | None = None, weight_decay: float | None = None) -> None:
        """Keep the optimizer (the torch one is built once the step count is known); `weight_decay` is set on
        it (PALM's verb). Without one, an Adam from this trainer's `lr` and `weight_decay`."""
        self.adam = self.planner.optimizer(optimizer, weight_decay)

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
        return self.loop.train(print_steps, eval_steps, resume_from, max_steps, selector)

    def evaluate(self, readers: dict[str, Reader] | None = None) -> dict[str, dict[str, float]]:
        """Metrics per task on the given readers, or on each task's dev reader. Under torch.distributed each
        rank decodes its shard of the examples and every rank scores all of them (the single-process metrics)."""
        return self.evaluator.evaluate(readers)

    def predict(self, task_name: str, inputs: Reader | list[str], output_file: str | Path | None = None) -> list[dict]:
        """Decoded predictions of one task (labels and spans, not ids); written as JSONL when asked."""
        return self.evaluator.predict(task_name, inputs, output_file)

    # ---- checkpoints: the trainer says what its state is; its Saver writes and reads the folders ------------
    def set_saver(self, save_path: str | Path, save_steps: int | None = None, keep_last: int = 3,
                  keep_best_optimizer_state: bool = False, overwrite: bool = False) -> None:
        """Checkpoints under `save_path`: `step-N` every `save_steps` steps (the last `keep_last`), `best`,
        `best-<task>`, `final`; the run state only in step-N and final (what a resume reads) unless
        `keep_best_optimizer_state`; `overwrite`: a new run deletes a run already there instead of refusing
        to start; see mtl.saver.Saver."""
        self.checkpoints.set_saver(save_path, save_steps, keep_last, keep_best_optimizer_state, overwrite)

    def save(self, folder: str | Path) -> Path:
        """Save the current model now (atomically) into `folder`, with the run state when training has started."""
        return self.checkpoints.save_to(folder)

    def export(self, folder: str | Path, base: bool = True) -> Path:
        """A deployable folder (no training state): `mtl.load(folder)` rebuilds the model with no user code.
        `base=False` (every task has a LoRA adapter): the adapters and heads alone, a few hundred kilobytes a
        task; `mtl.load(folder, base=...)` puts them back over the same base encoder."""
        return self.checkpoints.export(folder, base)

    def load_checkpoint(self, folder: str | Path) -> None:
        """Load a saved model's weights into these assembled components (e.g. in a fresh process); the
        readers' label maps must be the checkpoint's, or every prediction would decode to the wrong name."""
        self.checkpoints.load_weights(folder)

    def load_best(self) -> None:
        """Restore the best model seen by dev evaluation during `train`."""
        self.checkpoints.load_best()

    # ---- the seams the parts call through (tests and benchmarks wrap them) --------------------------------
    def _ready_model(self) -> MultiTaskModel:
        return self.planner.ready_model()

    def _plan(self) -> None:
        """Budgets, the exact number of steps, then optimizer and schedule bound to that number."""
        self.planner.plan()

    def _train_step(self, task: Task, batch: Any) -> tuple[float, dict[str, float]]:
        """3-5. forward, balanced losses, backward, clip, step: mtl.trainers.step, top to bottom."""
        return self.loop.step(task, batch, self.state)

    def _snapshot(self, training: bool = True, strict: bool = False) -> Snapshot:
        """What a checkpoint holds besides the weights (mtl.trainers.run_state)."""
        return self.checkpoints.snapshot(training, strict)
