"""Which tasks help each other: task-affinity estimates taken inside one multi-task run.

Two estimates, each a task x task matrix averaged over the run:
- lookahead (TAG, Fifty et al. 2021): take a step on the shared encoder with task i's gradient alone and see
  how task j's loss on its batch changes: Z(i -> j) = 1 - L_j(after) / L_j(before). Positive: a step for i
  helps j. The step is task i's share of the run's own optimizer step: for Adam, (1 - beta1) g_i (what one
  gradient adds to the momentum) scaled by the second-moment estimate updated with g_i, bias-corrected; the
  momentum's own part is common to every i and left out. For other optimizers it is plain SGD at the lr.
  Such a step is small (Adam moves a weight by at most about lr / sqrt(1 - beta2) per gradient), so L_j
  changes to first order in it: L_j(after) = L_j - <g_j, step_i>, and Z(i -> j) = <g_j, step_i> / L_j costs
  no forward beyond the n gradients (the default). `exact_every` also takes the exact lookahead, n x n more
  forwards in float32 (under bf16 a step of 1e-4 relative rounds away), to check the first-order one.
- gradient cosine: cos(g_i, g_j) of the tasks' raw gradients on the shared encoder.
The shared encoder's token-embedding table is left out of both: a batch's gradient there is nonzero only in
its own tokens' rows (two tasks meet only on the words they share), and its dense gradient costs more than
all the rest. Losses and gradients are taken with dropout off (the heads in training mode, where they
compute losses), so an exact "before" and "after" differ by the step alone. Nothing here touches the run:
gradients come from `torch.autograd.grad` (the parameters' `.grad` stays as it was), looked-ahead weights live
only in `torch.func.functional_call`, the optimizer's state is read, never written, and the forwards run
inside `torch.random.fork_rng` (the run's random streams never move).
"""
import time
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch import nn
from torch.func import functional_call

Matrix = dict[str, dict[str, float]]


class AffinityEstimator:
    """Every `every` steps, `estimate(model, batches, optimizer)` adds one lookahead and one cosine matrix;
    `tag` and `cosine` are their means so far, `history` the single estimates. `probe_size` examples per task
    (None: the reader's batch size) go into one estimate: its cost grows with it, as does its precision. Every
    `exact_every` steps (a multiple of `every`) the estimate also takes the exact lookahead (`tag_exact`: its
    mean), to check the first-order one against it."""

    def __init__(self, every: int = 50, probe_size: int | None = None, exact_every: int | None = None) -> None:
        if every < 1:
            raise ValueError(f"affinity: every must be >= 1 step, got {every}")
        if probe_size is not None and probe_size < 1:
            raise ValueError(f"affinity: probe_size must be >= 1 example, got {probe_size}")
        if exact_every is not None and (exact_every < 1 or exact_every % every):
            raise ValueError(f"affinity: exact_every must be a multiple of every={every}, got {exact_every}")
        self.every, self.probe_size, self.exact_every = every, probe_size, exact_every
        self.history: list[dict] = []
        self.seconds = 0.0  # time spent estimating (its cost against the run's), the exact lookaheads included

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def estimate(self, model: nn.Module, batches: dict[str, dict], optimizer: torch.optim.Optimizer | None = None,
                 step: int = 0, lr: float = 1e-3, autocast: Callable[[], ContextManager] = nullcontext) -> dict:
        """One estimate from one batch per task (`model(task, batch)` gives each head's outputs); the lookahead
        step is `optimizer`'s (plain SGD at `lr` without one). Gradients are taken under `autocast` (the
        run's precision) unless this estimate is exact."""
        exact = bool(self.exact_every) and step % self.exact_every == 0
        shared = shared_parameters(model)
        modes = {m: m.training for m in model.modules()}
        _without_dropout(model)
        try:
            with torch.random.fork_rng(devices=_devices(model)):
                state = torch.get_rng_state()  # a head's own random draws, if any, repeat "after"
                losses, grads = {}, []
                for task, batch in batches.items():
                    torch.set_rng_state(state)
                    with nullcontext() if exact else autocast():
                        loss = _task_loss(model(task, batch))
                    losses[task] = float(loss.detach())
                    grads.append(_flat(torch.autograd.grad(loss, list(shared.values()), allow_unused=True), shared))
                g = torch.stack(grads)  # tasks x shared weights
                steps = lookahead_steps(shared, g, optimizer, lr)
                record = {"step": step, "tag": _first_order(steps @ g.T, losses), "losses": losses,
                          "grad_cosine": _table(_cosines(g), list(batches))}
                if exact:
                    started = time.perf_counter()
                    record["tag_exact"] = _exact(model, shared, steps, batches, losses, state)
                    record["exact_seconds"] = time.perf_counter() - started
        finally:
            for module, training in modes.items():
                module.training = training
        self.history.append(record)
        return record

    @property
    def tag(self) -> Matrix:
        return mean_matrix([h["tag"] for h in self.history])

    @property
    def tag_exact(self) -> Matrix:
        return mean_matrix([h["tag_exact"] for h in self.history if "tag_exact" in h])

    @property
    def exact_seconds(self) -> float:
        """The part of `seconds` the exact lookaheads took (the rest is the default estimate's cost)."""
        return sum(h.get("exact_seconds", 0.0) for h in self.history)

    @property
    def cosine(self) -> Matrix:
        return mean_matrix([h["grad_cosine"] for h in self.history])


def shared_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The shared encoder's trainable weights but its token-embedding table."""
    table = getattr(getattr(model, "backbone", None), "word_embeddings", None)
    return {name: p for name, p in model.named_parameters()
            if name.startswith("backbone.") and p.requires_grad and p is not table}


def lookahead_steps(shared: dict[str, nn.Parameter], grads: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                    lr: float) -> torch.Tensor:
    """Each task's share of the step `optimizer` would take (rows of `grads`: flat gradients over `shared`,
    in order); the weights minus it are the looked-ahead weights."""
    settings = {id(p): group for group in (optimizer.param_groups if optimizer else []) for p in group["params"]}
    steps, offset = torch.empty_like(grads), 0
    for p in shared.values():
        part = slice(offset, offset + p.numel())
        group = settings.get(id(p))
        state = optimizer.state.get(p, {}) if group is not None else {}
        steps[:, part] = _step(grads[:, part], group, state, lr)
        offset += p.numel()
    return steps


def _step(g: torch.Tensor, group: dict | None, state: dict, lr: float) -> torch.Tensor:
    """Adam's step for g's rows, each alone (its share of the momentum, the second moment updated with it);
    SGD's without Adam's settings."""
    if group is None:
        return lr * g
    if "betas" not in group:
        return group["lr"] * g
    (beta1, beta2), t = group["betas"], float(state.get("step", 0))
    bias = 1 - beta2 ** (t + 1)
    second = g * g * ((1 - beta2) / bias)
    if "exp_avg_sq" in state:
        second += state["exp_avg_sq"].flatten() * (beta2 / bias)
    return g * (group["lr"] * (1 - beta1)) / (second.sqrt_() + group["eps"])


def _exact(model: nn.Module, shared: dict[str, nn.Parameter], steps: torch.Tensor, batches: dict[str, dict],
           losses: dict[str, float], state: torch.Tensor) -> Matrix:
    """TAG's lookahead as defined: every task's loss again after each task's step (float32 forwards)."""
    tasks, tag = list(batches), {}
    for i, step in zip(tasks, steps):
        ahead, offset = {}, 0
        for name, p in shared.items():
            ahead[name] = p.detach() - step[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        tag[i] = {}
        for j, batch in batches.items():
            torch.set_rng_state(state)
            with torch.no_grad():
                after = float(_task_loss(functional_call(model, ahead, (j, batch), strict=False)))
            tag[i][j] = 1.0 - after / losses[j] if losses[j] else 0.0
    return tag


def _flat(grads: tuple, shared: dict[str, nn.Parameter]) -> torch.Tensor:
    """One float32 vector of a task's gradients over `shared` (zeros where it has none)."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).float().flatten()
                      for g, p in zip(grads, shared.values())])


def _first_order(products: torch.Tensor, losses: dict[str, float]) -> Matrix:
    """Z(i -> j) = <step_i, g_j> / L_j from the matrix of products."""
    tasks = list(losses)
    return {i: {j: float(products[a, b]) / losses[j] if losses[j] else 0.0 for b, j in enumerate(tasks)}
            for a, i in enumerate(tasks)}


def _cosines(g: torch.Tensor) -> torch.Tensor:
    norms = g.norm(dim=1).clamp_min(1e-30)
    return (g @ g.T) / norms[:, None] / norms[None, :]


def _table(values: torch.Tensor, tasks: list[str]) -> Matrix:
    return {i: {j: float(values[a, b]) for b, j in enumerate(tasks)} for a, i in enumerate(tasks)}


def _without_dropout(model: nn.Module) -> None:
    """The encoder in eval mode (its dropouts, attention's included, off) and every dropout module off; the
    heads stay in training mode, where they compute their losses."""
    model.train()
    getattr(model, "backbone", model).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()


def _task_loss(outputs: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """A task's loss as one number: its heads' losses, each at its static weight (no balancer)."""
    return sum(out["loss"].float() for out in outputs.values() if "loss" in out)


def mean_matrix(matrices: list[Matrix]) -> Matrix:
    """The entry-by-entry mean of task x task matrices ({} for none)."""
    if not matrices:
        return {}
    tasks = list(matrices[0])
    return {i: {j: sum(m[i][j] for m in matrices) / len(matrices) for j in tasks} for i in tasks}


def _devices(model: nn.Module) -> list[int]:
    return [p.device.index or 0 for p in list(model.parameters())[:1] if p.device.type == "cuda"]
