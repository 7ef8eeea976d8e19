"""The word-embedding gradient in a buffer kept across steps.

Autograd's gradient of an embedding lookup is a fresh dense vocab x hidden tensor every backward pass (47 MB
for BERT's 30522-word vocabulary at hidden size 384). The C allocator serves a block that big with fresh
pages (mmap) and returns them when `zero_grad(set_to_none=True)` frees the gradient, so every step pays a
page fault per 4 KiB page, the kernel's zeroing of it, then the zero fill itself: under the profiler, on a
2-core CPU, the largest cost of a MiniLM step after the matrix products (benchmarks/step_profile.py). Here
the lookup's backward adds its rows into one buffer, zeroed in place before each reuse and kept through a
`train()` call (the trainer releases it when the call returns): the same sums over the same rows, no fresh
memory. The module also knows which rows its lookups wrote since the buffer was zeroed (a few hundred of
30522 in a batch), as long as nothing else wrote to the buffer (its version counter says so): zeroing then
clears those rows only, and the gradient clipping (mtl.speed.clipping) takes the norm over those rows.
`install_grad_buffer` (through mtl.speed.SpeedKernels, for one `train()` call) swaps the class of a model's
input embeddings in place and returns the function that frees the buffer and swaps the class back.

Only for one eager process: DistributedDataParallel needs autograd to deliver every gradient (its all-reduce
hooks fire there), and torch.compile traces the lookup itself. A caller that keeps a reference to the
embedding's `.grad` past `zero_grad` sees it zeroed at the next backward pass.
"""
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

# kept in __dict__: no state dict entry
_STATE = ("_grad_buffer", "_rows", "_unique_rows", "_clean_version", "_autograd_only")


class _Lookup(torch.autograd.Function):
    """F.embedding whose weight gradient goes to the module's buffer, not through autograd."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, weight: torch.Tensor, module: "GradBufferEmbedding") -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.module = module
        return F.embedding(ids, weight, module.padding_idx)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[None, None, None]:
        (ids,) = ctx.saved_tensors
        ctx.module.add_to_grad(ids, grad_output)
        return None, None, None


class GradBufferEmbedding(nn.Embedding):
    """An nn.Embedding (same parameters, same state dict) whose weight gradient is accumulated into a kept
    buffer. Made by `install_grad_buffer`, which swaps the class of an existing embedding in place."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad) or self.__dict__.get("_autograd_only"):
            return F.embedding(ids, self.weight, self.padding_idx)
        return _Lookup.apply(ids, self.weight, self)

    def add_to_grad(self, ids: torch.Tensor, grad_output: torch.Tensor) -> None:
        """weight.grad[ids] += grad_output, row by row (the padding row gets nothing, as in nn.Embedding)."""
        weight = self.weight
        if weight.grad is None:
            weight.grad = self._zeroed_buffer()
        flat = ids.reshape(-1)
        rows = grad_output.reshape(-1, grad_output.shape[-1]).to(weight.grad.dtype)
        if self.padding_idx is not None:
            rows = rows.masked_fill((flat == self.padding_idx).unsqueeze(1), 0)
        clean = self._rows_known(weight.grad)
        weight.grad.index_add_(0, flat, rows)
        state = self.__dict__
        state.update(_rows=state["_rows"] + [flat] if clean else None, _unique_rows=None,
                     _clean_version=weight.grad._version if clean else None)

    def written_rows(self) -> torch.Tensor | None:
        """The rows of `weight.grad` that may be non-zero (sorted, unique), when the gradient is this module's
        buffer and nothing but its lookups wrote to it since it was zeroed; else None (anything may be)."""
        grad = self.weight.grad
        return self._written_rows() if grad is not None and self._rows_known(grad) else None

    def _written_rows(self) -> torch.Tensor:
        state = self.__dict__
        if state["_unique_rows"] is None:
            state["_unique_rows"] = torch.unique(torch.cat(state["_rows"])) if state["_rows"] else \
                torch.empty(0, dtype=torch.long, device=self.weight.device)
        return state["_unique_rows"]

    def _rows_known(self, grad: torch.Tensor) -> bool:
        """True while `grad` is the buffer and its version counter shows only the writes noted here (an
        in-place add by autograd, as for a tied output layer, or any other write, makes every row suspect)."""
        state = self.__dict__
        return grad is state.get("_grad_buffer") and state.get("_clean_version") == grad._version

    def _zeroed_buffer(self) -> torch.Tensor:
        """The buffer with every row zero: only the rows written since the last zeroing when they are known."""
        buffer = self.__dict__.get("_grad_buffer")
        weight = self.weight
        if buffer is None or buffer.shape != weight.shape or buffer.dtype != weight.dtype \
                or buffer.device != weight.device:
            buffer = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            self.__dict__["_grad_buffer"] = buffer
        elif self._rows_known(buffer):
            buffer.index_fill_(0, self._written_rows(), 0)
        else:
            buffer.zero_()
        self.__dict__.update(_rows=[], _unique_rows=None, _clean_version=buffer._version)
        return buffer

    def release(self) -> None:
        """Free the buffer (as large as the embedding table, 94 MB for BERT-base); the next backward pass makes
        a new one. A gradient that is the buffer stays the gradient, no longer reused."""
        for name in _STATE:
            self.__dict__.pop(name, None)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the buffer behind (it is scratch memory, as large as the weights)."""
        state = self.__dict__.copy()
        for name in _STATE:
            state.pop(name, None)
        return state


def input_embeddings(model: nn.Module) -> nn.Embedding | None:
    """The input embeddings of the first module in `model` (itself included, then its submodules in order)
    with a `get_input_embeddings` method, as an HF model has: an mtl model's shared encoder."""
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get):
            found = get()
            return found if isinstance(found, nn.Embedding) else None
    return None


def install_grad_buffer(model: nn.Module) -> Callable[[], None] | None:
    """Put the buffer on `model`'s input embeddings (`input_embeddings`), in place; parameters, names and
    hooks stay. Returns the function that frees the buffer and gives the module its class back, or None when
    the embeddings were left alone: none found, another class, or options the buffer does not reproduce
    (sparse gradients, max_norm, scale_grad_by_freq)."""
    module = input_embeddings(model)
    if module is None or type(module) is not nn.Embedding \
            or module.sparse or module.max_norm is not None or module.scale_grad_by_freq:
        return None
    module.__class__ = GradBufferEmbedding

    def undo() -> None:
        if type(module) is GradBufferEmbedding:
            module.release()
            module.__class__ = nn.Embedding
    return undo
