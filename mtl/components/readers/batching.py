"""Cutting an epoch's order into batches by token budget, and padding rows into one tensor."""
import numpy as np
import torch


def budget_cuts(order: np.ndarray, lengths: np.ndarray, max_tokens: int, multiple: int | None) -> list[np.ndarray]:
    """Cut `order` into consecutive batches whose rows x padded width stays within `max_tokens` (an example
    longer than the budget alone makes a batch). Sorted input gives the fewest batches."""
    batches, start, width = [], 0, 0
    for i, index in enumerate(order):
        own = -(-int(lengths[index]) // multiple) * multiple if multiple else int(lengths[index])
        if i > start and (i - start + 1) * max(width, own) > max_tokens:
            batches.append(order[start:i])
            start, width = i, 0
        width = max(width, own)
    return batches + ([order[start:]] if start < len(order) else [])


def stack(values: list, pad: int, multiple: int | None = None, cap: int = 0) -> torch.Tensor:
    """Rows padded to the longest, rounded up to `multiple` but not past `cap` (the model's max_seqlen)."""
    if not isinstance(values[0], list):
        return torch.tensor(values, dtype=torch.long)
    longest = max(len(v) for v in values)
    width = max(longest, min(-(-longest // multiple) * multiple, cap)) if multiple else longest
    out = torch.full((len(values), width), pad, dtype=torch.long)
    for row, value in enumerate(values):
        out[row, :len(value)] = torch.tensor(value, dtype=torch.long)
    return out
