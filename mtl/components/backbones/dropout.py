"""Dropout whose masks come from a cheaper random source on the CPU.

torch's CPU dropout draws one random number per element (`bernoulli_`), then divides and multiplies: for
MiniLM's 13 hidden-state dropouts and its 6 attention dropouts that is about 7% of a profiled training step
on a 2-core CPU (benchmarks/step_profile.py). Here one 64-bit draw of the same generator gives four 16-bit
uniform numbers, each compared with p: the drop probability is p rounded to a multiple of 1/65536
(0.1 -> 0.100006), the kept values are scaled by 1 / (1 - p) as in torch, and the generator is torch's
default one, so a seed (and a resumed run's saved RNG state) fixes the masks. The mask is kept as booleans
for the backward pass (torch keeps it in the input's dtype).

Only nn.Dropout modules are replaced (attention-probability dropout inside SDPA stays torch's), and only on
the CPU: a GPU's fused dropout kernel is already fast.
"""
import math

import torch
from torch import nn


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Booleans of `shape`, each True with probability 1 - p (p in 1/65536 steps), from torch's generator."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)
    threshold = -32768 + round(p * 65536)
    return (words.view(torch.int16)[:count] >= threshold).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = keep_mask(x.shape, p)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.where(mask, x * ctx.scale, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad * ctx.scale, 0), None


class FastDropout(nn.Dropout):
    """nn.Dropout (same `p`, same `inplace` flag, no state) with `keep_mask` masks on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or x.numel() == 0:
            return super().forward(x)
        if self.p == 1:
            return x * 0
        return _Dropout.apply(x, self.p)


def use_fast_dropout(model: nn.Module, on: bool) -> int:
    """Swap the class of every plain nn.Dropout in `model` to FastDropout (or back), in place; returns how
    many modules are FastDropout afterwards."""
    swapped = 0
    for module in model.modules():
        if on and type(module) is nn.Dropout:
            module.__class__ = FastDropout
        elif not on and type(module) is FastDropout:
            module.__class__ = nn.Dropout
        swapped += type(module) is FastDropout
    return swapped
