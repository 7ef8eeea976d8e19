"""Learning-rate schedules as pure functions of the step: factor(step) multiplies the base lr.

`num_train_steps=None` means "the steps that will actually run": the trainer fills it in.
"""
import math


class Scheduler:
    """Base: warmup steps and total steps; subclasses define `factor`."""

    def __init__(self, warmup_steps: int = 0, num_train_steps: int | None = None) -> None:
        if warmup_steps < 0 or (num_train_steps is not None and num_train_steps < 1):
            raise ValueError(f"need warmup_steps >= 0 and num_train_steps >= 1, got {warmup_steps}, {num_train_steps}")
        self.warmup_steps, self.num_train_steps = int(warmup_steps), num_train_steps

    def bind(self, num_train_steps: int) -> None:
        """Set the total when the user left it to the trainer."""
        if self.num_train_steps is None:
            self.num_train_steps = int(num_train_steps)

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def _warmup(self, step: int) -> float | None:
        return step / self.warmup_steps if step < self.warmup_steps else None

    def _total(self) -> int:
        if self.num_train_steps is None:
            raise RuntimeError(f"{type(self).__name__}: num_train_steps unknown; bind() it first")
        return self.num_train_steps


class TriangularScheduler(Scheduler):
    """PALM's exact form: base * t / W during warmup, then base * max(0, 1 - t / T) (decay counted from 0)."""

    def factor(self, step: int) -> float:
        warm = self._warmup(step)
        return warm if warm is not None else max(0.0, 1.0 - step / self._total())


TriangularSchedualer = TriangularScheduler  # PALM's spelling, kept so PALM scripts run


class LinearWarmupDecay(Scheduler):
    """Warmup, then linear decay from the peak at W to 0 at T: base * (T - t) / (T - W)."""

    def factor(self, step: int) -> float:
        warm = self._warmup(step)
        total = self._total()
        return warm if warm is not None else max(0.0, (total - step) / max(1, total - self.warmup_steps))


class ConstantScheduler(Scheduler):
    """Warmup, then the base lr."""

    def factor(self, step: int) -> float:
        warm = self._warmup(step)
        return warm if warm is not None else 1.0


class CosineScheduler(Scheduler):
    """Warmup, then half a cosine from the base lr to 0 at T."""

    def factor(self, step: int) -> float:
        warm = self._warmup(step)
        if warm is not None:
            return warm
        progress = min(1.0, (step - self.warmup_steps) / max(1, self._total() - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
