"""Learning-rate schedules: triangular (PALM's formula), linear-from-warmup, constant, cosine."""
from mtl.components.lr_schedulers.schedules import (ConstantScheduler, CosineScheduler, LinearWarmupDecay, Scheduler,
                                                    TriangularSchedualer, TriangularScheduler)

__all__ = ["Scheduler", "TriangularScheduler", "TriangularSchedualer", "LinearWarmupDecay", "ConstantScheduler",
           "CosineScheduler"]
