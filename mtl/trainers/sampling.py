"""Task samplers: which task trains at each step. Pure and seeded (own generator, never global state).
And the run's plan: PALM's budgets per task and the exact number of steps the sampler will run."""
import copy
from dataclasses import dataclass
from typing import Any

import numpy as np


class TaskSampler:
    """Draws a task index per step from `probabilities(step)`; the generator state can be saved and restored."""

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        self.num_tasks, self.seed = num_tasks, seed
        self.rng = np.random.default_rng(seed)

    def probabilities(self, step: int) -> np.ndarray:
        raise NotImplementedError

    def draw(self, step: int) -> int:
        cumulative = np.cumsum(self.probabilities(step))
        return int(min(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"),
                       self.num_tasks - 1))

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _normalized(weights: list[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    if (array < 0).any() or array.sum() <= 0:
        raise ValueError(f"sampling weights must be >= 0 with a positive sum, got {weights}")
    return array / array.sum()


class MixRatioSampler(TaskSampler):
    """PALM's rule: task t with probability mix_ratio_t / sum(mix_ratio)."""

    def __init__(self, mix_ratios: list[float], seed: int = 0) -> None:
        super().__init__(len(mix_ratios), seed)
        self.probs = _normalized(mix_ratios)

    def probabilities(self, step: int) -> np.ndarray:
        return self.probs


class ProportionalSampler(MixRatioSampler):
    """Probability proportional to each task's number of examples."""

    def __init__(self, sizes: list[int], seed: int = 0) -> None:
        super().__init__([float(s) for s in sizes], seed)


class TemperatureSampler(MixRatioSampler):
    """Probability proportional to size ** (1 / temperature): 1 is proportional, large T tends to uniform."""

    def __init__(self, sizes: list[int], temperature: float = 2.0, seed: int = 0) -> None:
        super().__init__([float(s) ** (1.0 / temperature) for s in sizes], seed)


class UniformSampler(MixRatioSampler):
    """Every task equally often."""

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__([1.0] * num_tasks, seed)


class AnnealedSampler(TaskSampler):
    """Starts proportional to size and anneals towards uniform over `total_steps` (Stickland & Murray 2019)."""

    def __init__(self, sizes: list[int], total_steps: int, seed: int = 0) -> None:
        super().__init__(len(sizes), seed)
        self.sizes, self.total_steps = np.asarray(sizes, dtype=np.float64), max(1, total_steps)

    def probabilities(self, step: int) -> np.ndarray:
        alpha = 1.0 - 0.8 * min(1.0, step / self.total_steps)
        return _normalized(list(self.sizes ** alpha))


def plan_total_steps(sampler: TaskSampler, budgets: list[int], auxiliary: list[bool]) -> int:
    """The exact number of steps training will run: replay a copy of the seeded sampler until every
    non-auxiliary task has used its budget (auxiliary tasks never hold training open)."""
    replay = copy.deepcopy(sampler)
    remaining = {i: b for i, (b, aux) in enumerate(zip(budgets, auxiliary)) if not aux and b > 0}
    limit = 1000 * (sum(remaining.values()) + 1)
    step = 0
    while remaining:
        if step > limit:
            raise ValueError(f"tasks {sorted(remaining)} cannot use their budgets: their sampling probability is ~0")
        index = replay.draw(step)
        step += 1
        if index in remaining:
            remaining[index] -= 1
            if remaining[index] == 0:
                del remaining[index]
    return step


@dataclass
class Plan:
    """The length of a run, fixed before its first step."""

    num_epochs: float
    base: int  # batches per epoch of the sampling reference task
    budgets: list[int]  # each task's steps, in task order
    total_steps: int


def plan_run(tasks: list[Any], reference: str, num_epochs: float | None, sampler: TaskSampler) -> Plan:
    """PALM's budgets: base = N_ref // batch_size_ref (with token-budget batches, the reference reader's real
    batch count of an epoch; streaming, the steps_per_epoch it was given), steps_t = int(num_epochs *
    mix_ratio_t * base); then the exact number of steps (`plan_total_steps`, on a copy of `sampler`). `num_epochs` None: the reference reader's (PALM's
    single-task scripts give epochs to load_data)."""
    by_name = {t.name: t for t in tasks}
    if reference not in by_name:
        raise ValueError(f"sampling_reference {reference!r} is not a task: {sorted(by_name)}")
    for task in tasks:
        if task.reader is None:
            raise ValueError(f"task {task.name!r} has no training reader")
    ref = by_name[reference].reader
    num_epochs = ref.num_epochs if num_epochs is None else num_epochs
    if num_epochs is None:
        raise ValueError("num_epochs is not set (MultiHeadTrainer, fit_readers_with_mixratio or load_data)")
    counted = getattr(ref, "max_tokens", None) is not None or getattr(ref, "streaming", False)
    base = ref.steps_per_epoch if counted else max(1, ref.num_examples // ref.batch_size)
    budgets = [int(num_epochs * task.mix_ratio * base) for task in tasks]
    return Plan(num_epochs, base, budgets, plan_total_steps(sampler, budgets, [t.is_aux for t in tasks]))
