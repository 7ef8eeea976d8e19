"""What "best" means: one dev metric per task, a weighted mean across tasks, and when to stop early."""
import math
from dataclasses import dataclass, field

from mtl.errors import MtlError


@dataclass
class Verdict:
    """The outcome of one evaluation: the weighted score, whether it is the best so far, which tasks improved
    on their own metric, and whether patience ran out."""

    step: int
    score: float
    improved: bool
    improved_tasks: list[str] = field(default_factory=list)
    task_values: dict[str, float] = field(default_factory=dict)
    stop: bool = False


class Selector:
    """Judges dev results during training.

    Each task is judged by one metric of its dev results (`metrics[task]`, default `score`: the mean of its
    heads' main metrics, plus frame accuracy when it has several heads); the run by the weighted mean of those
    (`weights[task]`, default 1; 0 leaves a task out). With `early_stopping_patience=N`, training stops after
    N evaluations in a row without a better weighted mean. Its state is saved with checkpoints, so a resumed
    run keeps its best scores and its patience count.
    """

    def __init__(self, metrics: dict[str, str] | None = None, weights: dict[str, float] | None = None,
                 early_stopping_patience: int | None = None) -> None:
        if early_stopping_patience is not None and early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {early_stopping_patience}")
        if any(w < 0 for w in (weights or {}).values()):
            raise ValueError(f"selection weights must be >= 0, got {weights}")
        self.metrics, self.weights = dict(metrics or {}), dict(weights or {})
        self.patience = early_stopping_patience
        self.best, self.best_step, self.task_best, self.evals_without_gain = -math.inf, None, {}, 0

    def check_tasks(self, names: list[str]) -> None:
        """Fail before training when `metrics` or `weights` name a task that does not exist."""
        unknown = sorted((set(self.metrics) | set(self.weights)) - set(names))
        if unknown:
            raise ValueError(f"Selector names unknown tasks {unknown}; the tasks are {names}")

    @property
    def stopped(self) -> bool:
        return self.patience is not None and self.evals_without_gain >= self.patience

    def task_value(self, task: str, results: dict[str, float]) -> float:
        name = self.metrics.get(task, "score")
        if name not in results:
            raise MtlError(f"task {task!r}: selection metric {name!r} is not among its dev metrics {sorted(results)}")
        return results[name]

    def update(self, step: int, results: dict[str, dict[str, float]]) -> Verdict:
        """Record one evaluation (task -> its dev metrics) and say what improved."""
        values = {task: self.task_value(task, metrics) for task, metrics in results.items()}
        weighted = [(self.weights.get(task, 1.0), value) for task, value in values.items()]
        total = sum(w for w, _ in weighted)
        if total <= 0:
            raise MtlError(f"the selection weights of the evaluated tasks {sorted(values)} sum to 0")
        score = sum(w * v for w, v in weighted) / total
        improved_tasks = [t for t, v in values.items() if v > self.task_best.get(t, -math.inf)]
        self.task_best.update({t: values[t] for t in improved_tasks})
        improved = score > self.best
        if improved:
            self.best, self.best_step, self.evals_without_gain = score, step, 0
        else:
            self.evals_without_gain += 1
        return Verdict(step, score, improved, improved_tasks, values, self.stopped)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "task_best": dict(self.task_best),
                "evals_without_gain": self.evals_without_gain}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = float(state["best"]), state["best_step"]
        self.task_best = {k: float(v) for k, v in state["task_best"].items()}
        self.evals_without_gain = int(state["evals_without_gain"])
