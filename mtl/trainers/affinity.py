"""Which tasks help each other: task-affinity estimates taken inside one multi-task run.

Two estimates, each a task x task matrix averaged over the run:
- lookahead (TAG, Fifty et al. 2021): take a step on the shared encoder with task i's gradient alone and see
  how task j's loss on its batch changes: Z(i -> j) = 1 - L_j(after) / L_j(before). Positive: a step for i
  helps j. The step is plain SGD at the optimizer's current lr.
- gradient cosine: cos(g_i, g_j) of the tasks' gradients on the shared encoder (cheaper: no extra forward).
Nothing here touches the run: gradients come from `torch.autograd.grad` (the parameters' `.grad` stays as
it was), the looked-ahead weights live only in `torch.func.functional_call`, the optimizer is not consulted
beyond its lr, and every forward runs inside `torch.random.fork_rng` with the same RNG state for "before"
and "after" (so dropout draws the same masks for both, and the run's own random streams never move).
"""
import math
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch import nn
from torch.func import functional_call

Matrix = dict[str, dict[str, float]]


class AffinityEstimator:
    """Every `every` steps, `estimate(model, batches, lr)` adds one lookahead and one cosine matrix; `tag` and
    `cosine` are their means so far, `history` the single estimates."""

    def __init__(self, every: int = 50) -> None:
        if every < 1:
            raise ValueError(f"affinity: every must be >= 1 step, got {every}")
        self.every = every
        self.history: list[dict] = []
        self.seconds = 0.0  # time spent estimating (its cost against the run's)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def estimate(self, model: nn.Module, batches: dict[str, dict], lr: float, step: int = 0,
                 autocast: Callable[[], ContextManager] = nullcontext) -> dict:
        """One estimate from one batch per task (`model(task, batch)` gives each head's outputs)."""
        shared = {name: p for name, p in model.named_parameters() if name.startswith("backbone.") and p.requires_grad}
        was_training = model.training
        model.train()
        with torch.random.fork_rng(devices=_devices(model)):
            state = torch.get_rng_state()
            losses, grads = {}, {}
            for task, batch in batches.items():
                torch.set_rng_state(state)
                with autocast():
                    loss = _task_loss(model(task, batch))
                losses[task] = float(loss.detach())
                grads[task] = torch.autograd.grad(loss, list(shared.values()), allow_unused=True)
            tag = {i: {} for i in batches}
            for i in batches:
                ahead = {name: p.detach() - lr * g.to(p.dtype) if g is not None else p.detach()
                         for (name, p), g in zip(shared.items(), grads[i])}
                for j, batch in batches.items():
                    torch.set_rng_state(state)
                    with torch.no_grad(), autocast():
                        after = float(_task_loss(functional_call(model, ahead, (j, batch), strict=False)))
                    tag[i][j] = 1.0 - after / losses[j] if losses[j] else 0.0
        model.train(was_training)
        cosine = {i: {j: _cosine(grads[i], grads[j]) for j in batches} for i in batches}
        record = {"step": step, "tag": tag, "grad_cosine": cosine, "losses": losses}
        self.history.append(record)
        return record

    @property
    def tag(self) -> Matrix:
        return _mean([h["tag"] for h in self.history])

    @property
    def cosine(self) -> Matrix:
        return _mean([h["grad_cosine"] for h in self.history])


def _task_loss(outputs: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """A task's loss as one number: its heads' losses, each at its static weight (no balancer)."""
    return sum(out["loss"].float() for out in outputs.values() if "loss" in out)


def _cosine(a: tuple, b: tuple) -> float:
    pairs = [(x.float().flatten(), y.float().flatten()) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return 0.0
    dot = sum(float(x @ y) for x, y in pairs)
    norm = math.sqrt(sum(float(x @ x) for x, _ in pairs) * sum(float(y @ y) for _, y in pairs))
    return dot / norm if norm else 0.0


def _mean(matrices: list[Matrix]) -> Matrix:
    if not matrices:
        return {}
    tasks = list(matrices[0])
    return {i: {j: sum(m[i][j] for m in matrices) / len(matrices) for j in tasks} for i in tasks}


def _devices(model: nn.Module) -> list[int]:
    return [p.device.index or 0 for p in list(model.parameters())[:1] if p.device.type == "cuda"]
