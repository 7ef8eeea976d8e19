"""Gradient clipping with the norm over the embedding rows a batch wrote and the scaling inside the fused
AdamW step: the same norm and the same update as torch's clip_grad_norm_ followed by the step; without the
kernels, exactly torch's clip_grad_norm_ path. The path is chosen by the kernels' installer, not guessed."""
import copy

import pytest
import torch
from torch import nn

from mtl.speed import SpeedKernels
from mtl.speed.clipping import clipped_step, gradient_norm, plain_clipped_step
from mtl.speed.grad_buffer import GradBufferEmbedding


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.out = nn.Embedding(300, 16, padding_idx=0), nn.Linear(16, 5)

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embedding(ids)).logsumexp(-1).sum()


def _pair() -> tuple[Tagger, Tagger]:
    torch.manual_seed(0)
    plain = Tagger()
    buffered = copy.deepcopy(plain)
    buffered.embedding.__class__ = GradBufferEmbedding
    return plain, buffered


def test_the_norm_over_written_rows_is_the_whole_norm():
    plain, buffered = _pair()
    ids = torch.tensor([[4, 9, 0, 9], [250, 3, 3, 0]])
    for model in (plain, buffered):
        model.loss(ids).backward()
    assert buffered.embedding.written_rows() is not None
    whole = torch.nn.utils.get_total_norm([p.grad for p in plain.parameters()])
    torch.testing.assert_close(gradient_norm(buffered), whole)
    torch.testing.assert_close(gradient_norm(plain), whole)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("max_norm", [0.5, 1e6, None])
def test_steps_match_torchs_clip_then_step(fused, max_norm):
    plain, buffered = _pair()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.01, fused=fused) for m in (plain, buffered)]
    for ids in (torch.tensor([[4, 9, 0, 9]]), torch.tensor([[7, 7, 250]]), torch.tensor([[4, 1]])):
        for model, optimizer in zip((plain, buffered), optimizers):
            optimizer.zero_grad(set_to_none=True)
            model.loss(ids).backward()
        norm = torch.nn.utils.clip_grad_norm_(plain.parameters(), max_norm or float("inf"))
        assert max_norm != 0.5 or norm > 2  # the clipped case clips
        optimizers[0].step()
        clipped_step(optimizers[1], buffered, float(gradient_norm(buffered)), max_norm)
        assert not hasattr(optimizers[1], "grad_scale")
        for mine, reference in zip(buffered.parameters(), plain.parameters()):
            torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7)


def test_a_non_finite_gradient_gives_a_non_finite_norm():
    _, buffered = _pair()
    buffered.loss(torch.tensor([[4, 9]])).backward()
    buffered.out.weight.grad[0, 0] = float("nan")
    assert torch.isnan(gradient_norm(buffered))
    buffered.out.weight.grad[0, 0] = float("inf")
    assert torch.isinf(gradient_norm(buffered))


@pytest.mark.parametrize("max_norm", [0.5, None])
def test_without_kernels_it_is_torchs_clip_grad_norm_exactly(max_norm, monkeypatch):
    """No kernel on the model: even a fused AdamW gets torch's clip_grads_with_norm_ and a plain step."""
    plain, _ = _pair()
    reference = copy.deepcopy(plain)
    kernels = SpeedKernels(plain, fast_dropout=False, grad_buffer=True).install()  # no encoder: nothing to put on
    assert not kernels.installed and kernels.clipped_step is plain_clipped_step
    step, scaled = torch.optim.AdamW.step, []

    def watched(self: torch.optim.AdamW, *args, **kwargs) -> None:
        scaled.append(hasattr(self, "grad_scale"))
        return step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.AdamW, "step", watched)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.1, fused=True) for m in (plain, reference)]
    for ids in (torch.tensor([[4, 9, 0, 9]]), torch.tensor([[7, 7, 250]])):
        for model, optimizer in zip((plain, reference), optimizers):
            optimizer.zero_grad(set_to_none=True)
            model.loss(ids).backward()
        kernels.clipped_step(optimizers[0], plain, float(gradient_norm(plain)), max_norm)
        if max_norm:
            torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
        optimizers[1].step()
        for mine, theirs in zip(plain.parameters(), reference.parameters()):
            assert torch.equal(mine, theirs)
    assert scaled and not any(scaled)


def test_the_installer_chooses_the_clipping_not_the_module_types():
    """The fast path goes with kernels this call installed; a model that merely holds a kernel's module class
    (put there by someone else) keeps torch's path, and the path goes back to torch's when the block ends."""
    plain, buffered = _pair()
    assert SpeedKernels(buffered, fast_dropout=False, grad_buffer=True).clipped_step is plain_clipped_step
    with_dropout = nn.Sequential(plain, nn.Dropout(0.1))
    with SpeedKernels(with_dropout, fast_dropout=True, grad_buffer=False) as kernels:
        assert kernels.installed == ["fast_dropout"] and kernels.clipped_step is clipped_step
    assert kernels.clipped_step is plain_clipped_step
