"""Global-norm gradient clipping: torch's plain path, and one with two passes over the gradients fewer.

The plain path is torch's `clip_grad_norm_` in two halves, as nanoGPT's loop writes it: the norm over every
gradient (`get_total_norm`, which the non-finite guard reads first), then `clip_grads_with_norm_` and the
optimizer step. It is taken when no speed kernel is on the model for the run.

With them on (`clipped_step`), it reads every gradient once less and multiplies none. For MiniLM torch's path is twice
22.7M numbers a step, half of them the word-embedding gradient, which is zero outside the rows the batch
looked up. Here the norm of a word-embedding gradient kept in mtl's buffer is taken over the rows its
lookups wrote (`GradBufferEmbedding.written_rows`; every other row is zero, so the norm is the same), and a
gradient that must shrink is scaled by a fused Adam or AdamW step itself: its `grad_scale` (the contract
torch's GradScaler uses) divides each gradient as the kernel reads it. Other optimizers get torch's in-place
multiplication. The clipped update is torch's, up to rounding: max_norm / (norm + 1e-6) when that is below 1.

Which of the two a run takes is chosen where the kernels are installed (`SpeedKernels.clipped_step`): the
installer knows what it put on the model, so nothing here guesses it from the model's module types.
"""
from typing import Callable

import torch
from torch import nn

from mtl.speed.grad_buffer import GradBufferEmbedding

# (optimizer, model, norm, max_norm): one optimizer step with the gradients clipped to max_norm
ClippedStep = Callable[[torch.optim.Optimizer, nn.Module, float, float | None], None]


def gradient_norm(model: nn.Module) -> torch.Tensor:
    """The 2-norm of all of `model`'s gradients together (inf or NaN when one is not finite); a buffered
    word-embedding gradient counts the rows its lookups wrote, the others are whole."""
    rows = {id(m.weight): r for m in model.modules()
            if isinstance(m, GradBufferEmbedding) and (r := m.written_rows()) is not None}
    grads = [p.grad.index_select(0, rows[id(p)]) if id(p) in rows else p.grad
             for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.nn.utils.get_total_norm(grads)


def plain_clipped_step(optimizer: torch.optim.Optimizer, model: nn.Module, norm: float,
                       max_norm: float | None) -> None:
    """torch's `clip_grad_norm_` with the norm already taken, then the step (no clipping when `max_norm` is
    None or 0)."""
    if max_norm:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, torch.tensor(norm))
    optimizer.step()


def clipped_step(optimizer: torch.optim.Optimizer, model: nn.Module, norm: float, max_norm: float | None) -> None:
    """One optimizer step with `model`'s gradients scaled by max_norm / (norm + 1e-6) when that is below 1
    (`norm` from `gradient_norm`, finite; no clipping when `max_norm` is None or 0), the scaling inside a
    fused Adam or AdamW step: the path that goes with the speed kernels."""
    scale = max_norm / (norm + 1e-6) if max_norm else 1.0
    if scale >= 1.0:
        optimizer.step()
    elif _fused_adam(optimizer):
        optimizer.grad_scale = torch.tensor(1.0 / scale, dtype=torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale
    else:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, torch.tensor(norm))
        optimizer.step()


def _fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and bool(optimizer.defaults.get("fused"))
