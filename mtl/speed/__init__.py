"""CPU speed kernels, installed on a model for the duration of a training call and undone after.

Three kernels make a CPU training step cheaper without changing its numbers (docs/speed.md):
fast dropout with a hand-written training attention (mtl.speed.dropout), the word-embedding gradient kept in
one buffer (mtl.speed.grad_buffer), and the clipping that reads that buffer's written rows and scales inside
a fused AdamW step (mtl.speed.clipping). The first two change a model in place (module classes, the
attention implementation of its transformers config), so they are scoped: `SpeedKernels` installs them on
entry and puts back exactly what it changed on exit, however the block ends. Importing mtl registers nothing
with transformers and changes no model. The clipping goes with what was installed (`clipped_step`: the fast
path while a kernel is on, torch's otherwise). Without them the training step is plain PyTorch:

    with SpeedKernels(model, fast_dropout=True, grad_buffer=True) as kernels:
        ...  # the training loop, clipping with kernels.clipped_step(optimizer, model, norm, max_norm)
"""
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from mtl.speed.clipping import ClippedStep, clipped_step, gradient_norm, plain_clipped_step
from mtl.speed.dropout import HAND_WRITTEN_MAX_KEYS, FastDropout, install_fast_dropout
from mtl.speed.grad_buffer import GradBufferEmbedding, install_grad_buffer


class SpeedKernels:
    """A context manager (or `install()` / `undo()`) that puts the chosen kernels on `model` and takes them
    off again. `fast_dropout`: `model`'s plain nn.Dropout modules become FastDropout and its transformers
    configs on SDPA use mtl's attention; `grad_buffer`: the input embeddings of the first module in `model`
    with `get_input_embeddings` (the encoder) keep their gradient in one buffer, released on exit.
    `hand_written_max_keys`: per dtype, the longest key sequence whose training attention without dropout is
    computed by hand (None: the measured default, HAND_WRITTEN_MAX_KEYS). Only what a call changed is put
    back, so an inner block never undoes an outer one's kernels."""

    def __init__(self, model: nn.Module, *, fast_dropout: bool, grad_buffer: bool,
                 hand_written_max_keys: Mapping[torch.dtype, int] | None = None) -> None:
        self.model, self.fast_dropout, self.grad_buffer = model, fast_dropout, grad_buffer
        self.hand_written_max_keys = HAND_WRITTEN_MAX_KEYS if hand_written_max_keys is None else hand_written_max_keys
        self.installed: list[str] = []  # the kernels on the model now, by name
        self._undo: list[Callable[[], None]] = []

    def install(self) -> "SpeedKernels":
        """Put the kernels on the model; on an error, whatever was put on is taken off again."""
        if self._undo:
            raise RuntimeError("these speed kernels are already installed")
        try:
            if self.grad_buffer and (undo := install_grad_buffer(self.model)) is not None:
                self._undo.append(undo)
                self.installed.append("grad_buffer")
            if self.fast_dropout:
                self._undo.append(install_fast_dropout(self.model, self.hand_written_max_keys))
                self.installed.append("fast_dropout")
        except BaseException:
            self.undo()
            raise
        return self

    def undo(self) -> None:
        """Put back what `install` changed, last change first."""
        while self._undo:
            self._undo.pop()()
        self.installed.clear()

    @property
    def clipped_step(self) -> ClippedStep:
        """The clipping that goes with what this call installed: `mtl.speed.clipping.clipped_step` (the norm
        over the buffer's written rows, the scaling inside a fused Adam step) while a kernel is on, torch's
        `plain_clipped_step` when none is. Chosen here, where the kernels are known, not from module types."""
        return clipped_step if self.installed else plain_clipped_step

    @contextmanager
    def autograd_only(self) -> Iterator[None]:
        """For the block, gradients go through autograd alone: the embedding buffer steps aside, so work that
        takes gradients beside the run (`torch.autograd.grad`: task-affinity estimates) leaves the run's
        `.grad` as it was."""
        embeddings = [m for m in self.model.modules() if isinstance(m, GradBufferEmbedding)]
        for module in embeddings:
            module.__dict__["_autograd_only"] = True
        try:
            yield
        finally:
            for module in embeddings:
                module.__dict__.pop("_autograd_only", None)

    def __enter__(self) -> "SpeedKernels":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.undo()


__all__ = ["SpeedKernels", "FastDropout", "GradBufferEmbedding", "HAND_WRITTEN_MAX_KEYS", "ClippedStep",
           "clipped_step", "gradient_norm", "plain_clipped_step"]
