"""One optimizer update, top to bottom: forward over the drawn task's batch, loss balancing, backward, the
non-finite guard, clipping, the optimizer and schedule steps, the run's counters.

A batch is one part (a single process without accumulation) or this process's micro-batches of a global
batch (torch.distributed, `grad_accum_steps`). Each head's loss is a mean over its units (`Head.loss_units`:
examples, labelled tokens, CRF sentences); a micro-batch's loss counts with weight units / (units of the
whole global batch, summed over processes), times the world size because DDP averages gradients. Summed
over processes and micro-batches this is exactly the mean over the global batch. Every head's loss is then
scaled by its static weights (`Head.loss_weight`, `Trainer.loss_weight`) and combined by the run's loss
balancer (mtl.trainers.balancing).
"""
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from mtl.components.readers.batch_drawing import Part
from mtl.errors import MtlError
from mtl import distributed
from mtl.speed.clipping import ClippedStep, gradient_norm, plain_clipped_step
from mtl.model.device import autocast, to_device
from mtl.trainers.separate_gradients import SeparateGradients

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """The loop's counters; saved with every training checkpoint, put back on resume."""

    global_step: int = 0
    skipped_steps: dict[str, int] = field(default_factory=dict)  # non-finite steps, per task
    nonfinite_in_a_row: int = 0

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "skipped_steps": dict(self.skipped_steps),
                "nonfinite_in_a_row": self.nonfinite_in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.global_step = int(state["global_step"])
        self.skipped_steps.update({k: int(v) for k, v in state.get("skipped_steps", {}).items()})
        self.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))


@dataclass
class Step:
    """What one update needs, bound once per run by the trainer."""

    model: Any            # MultiTaskModel (its balancer combines the losses)
    ddp: Any              # the model under DistributedDataParallel, or None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    precision: str
    max_grad_norm: float | None
    max_nonfinite_steps: int
    clipped_step: ClippedStep = plain_clipped_step  # the speed kernels' own when they are on (SpeedKernels)

    def __call__(self, task: Any, batch: dict | list[Part], state: RunState) -> tuple[float, dict[str, float]]:
        """The update for one batch of `task`; returns the summed head loss and each head's loss."""
        parts = [Part(batch, True)] if isinstance(batch, dict) else batch
        head_losses = self.forward_backward(task, parts)                 # 3-4. one encoder pass per part
        loss = sum(head_losses.values())
        problem = None if math.isfinite(loss) else f"loss is {loss}"
        if problem is None:  # 5. a non-finite gradient is caught too
            norm = float(gradient_norm(self.model))
            problem = None if math.isfinite(norm) else f"gradient norm is {norm}"
        if problem is None:
            self.clipped_step(self.optimizer, self.model, norm, self.max_grad_norm)
            state.nonfinite_in_a_row = 0
        else:  # no update: weights and Adam moments untouched; the step still counts
            self.skip(task, problem, head_losses, state)
        with warnings.catch_warnings():  # a skipped first step: torch warns that the scheduler went first
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.balancer.observe({f"{task.name}.{name}": value for name, value in head_losses.items()})
        return loss, head_losses

    def forward_backward(self, task: Any, parts: list[Part]) -> dict[str, float]:
        """Backward of the balanced, unit-weighted losses over every part; each head's mean loss. Every part
        goes backward, finite or not: under DDP each rank must join the all-reduce, and a non-finite gradient
        then reaches every rank, which all skip the update together."""
        model, balancer = self.ddp or self.model, self.model.balancer
        names, world = list(task.heads), distributed.world_size()
        shares = self.shares(task, names, parts)
        static = {name: task.loss_weight * task.heads[name].loss_weight * world for name in names}
        separate = SeparateGradients(self.model) if balancer.per_loss_gradients else None
        means = torch.zeros(len(names), dtype=torch.float64, device=self.device)  # one host copy per step
        has_loss: set[str] = set()
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            with distributed.no_sync(model, sync=last and separate is None):
                with autocast(self.device, self.precision):
                    outputs = model(task.name, to_device(part.batch, self.device))
                losses = {name: outputs[name]["loss"] for name in names if "loss" in outputs.get(name, {})}
                if not losses:
                    raise RuntimeError(f"task {task.name!r}: no head returned a loss; does the reader yield labels?")
                has_loss.update(losses)
                for j, name in enumerate(names):
                    if name in losses:
                        means[j] += losses[name].detach().double() * shares[i][j]
                scaled = {f"{task.name}.{n}": losses[n] * (shares[i][j] * static[n])
                          for j, n in enumerate(names) if n in losses}
                if separate is not None:
                    separate.backward(scaled)
                else:
                    weights = balancer.weights(list(scaled))
                    total = sum(weights[key] * loss for key, loss in scaled.items())
                    (total + balancer.extra(list(scaled)) if last else total).backward()
        if separate is not None:
            separate.finish(balancer)
        else:  # the balancer's own parameters, which DDP leaves alone (distributed.wrap)
            distributed.sync_ignored_gradients(self.ddp)
        means = distributed.all_reduce_sum(means).tolist()
        return {name: means[j] for j, name in enumerate(names) if name in has_loss}

    @staticmethod
    def shares(task: Any, names: list[str], parts: list[Part]) -> list[list[float]]:
        """Each part's share of each head's units in the global batch (1.0 for one part in one process; NaN
        for a head with nothing to average over)."""
        if len(parts) == 1 and distributed.world_size() == 1:
            return [[1.0] * len(names)]
        units = torch.tensor([[task.heads[h].loss_units(p.batch) if p.real else 0.0 for h in names] for p in parts],
                             dtype=torch.float64)
        totals = distributed.all_reduce_sum(units.sum(0))
        return [[float(units[i, j] / totals[j]) if totals[j] > 0 else math.nan for j in range(len(names))]
                for i in range(len(parts))]

    def skip(self, task: Any, problem: str, head_losses: dict[str, float], state: RunState) -> None:
        """Count a skipped update; warn (rank 0); stop after `max_nonfinite_steps` in a row."""
        step = state.global_step + 1
        state.skipped_steps[task.name] = state.skipped_steps.get(task.name, 0) + 1
        state.nonfinite_in_a_row += 1
        if distributed.is_main():
            heads = ", ".join(f"{name}={loss}" for name, loss in head_losses.items())
            log.warning("task %r, step %d: %s (head losses: %s); the update is skipped (%d skipped in a row, "
                        "training stops at %d)", task.name, step, problem, heads, state.nonfinite_in_a_row,
                        self.max_nonfinite_steps)
        if state.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise MtlError(f"task {task.name!r}, step {step}: {problem}; {state.nonfinite_in_a_row} steps in a row "
                           f"had a non-finite loss or gradient (max_nonfinite_steps={self.max_nonfinite_steps}), so "
                           "training stopped. The weights are still finite: the last checkpoint is usable. Lower "
                           "the lr, set max_grad_norm, train in fp32 (precision='fp32'), or check the task's data "
                           "and head for values that overflow")
