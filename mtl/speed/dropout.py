"""Dropout whose masks come from a cheaper random source on the CPU.

torch's CPU dropout draws one random number per element (`bernoulli_`), then divides and multiplies: for
MiniLM's 13 hidden-state dropouts and its 6 attention dropouts that is about 7% of a profiled training step
on a 2-core CPU (benchmarks/step_profile.py). Here one 64-bit draw of the same generator gives four 16-bit
uniform numbers, each compared with p: the drop probability is p rounded to a multiple of 1/65536
(0.1 -> 0.100006), the kept values are scaled by 1 / (1 - p) as in torch, and the generator is torch's
default one, so a seed (and a resumed run's saved RNG state) fixes the masks. The mask is kept as booleans
for the backward pass (torch keeps it in the input's dtype).

The attention probabilities' dropout sits inside SDPA, which on the CPU then leaves its fused kernel for an
unfused path with a `bernoulli_` mask: for a transformers model on SDPA, training attention with dropout on
the CPU is computed here instead, as softmax(QK^T * scale + mask) with a `keep_mask` dropout, times V (the
same arithmetic as transformers' eager attention). So is bf16 training attention without dropout over at
most 256 keys (`HAND_WRITTEN_MAX_KEYS`, the measured default of a `hand_written_max_keys` argument): there
SDPA's fused CPU kernel is slower than these three operators, forward and backward together, several times
so on short sentences, and so is a whole training step (benchmarks/attention_speed.py). In fp32 the
operators win only on short sequences and a training step gains nothing, and longer sequences are faster on
SDPA: those keep it. Every other call (evaluation, a causal or grouped-query attention, position bias, a
cache, a GPU) goes to transformers' SDPA function unchanged.

Only on the CPU: a GPU's fused dropout kernels are already fast.

Nothing here touches transformers or a model at import: `install_fast_dropout` (through
mtl.speed.SpeedKernels, for one `train()` call) registers the attention function under a name that carries
its threshold, points the model at it, and returns the function that puts back exactly what it changed.
"""
import math
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "mtl_sdpa_fast_dropout"
# without dropout, the longest key sequence computed by hand, per dtype (others: none); measured faster
# (benchmarks/attention_speed.py). Read-only: another threshold is an argument, never an edit of this one.
HAND_WRITTEN_MAX_KEYS: Mapping[torch.dtype, int] = MappingProxyType({torch.bfloat16: 256})


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


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None, *,
              hand_written_max_keys: Mapping[torch.dtype, int] = HAND_WRITTEN_MAX_KEYS,
              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract ([batch, heads, length, dim] in, [batch, length, heads, dim]
    out): the hand-written path for CPU training with dropout on plain bidirectional attention (and without
    dropout up to `hand_written_max_keys[dtype]` keys), else SDPA."""
    if not _hand_written(module, query, key, attention_mask, dropout, hand_written_max_keys, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return softmax_attention(query, key, value, attention_mask, dropout, scaling), None


def softmax_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None) -> torch.Tensor:
    """softmax(QK^T * scale + mask) with a `keep_mask` dropout, times V, as [batch, length, heads, dim]; a
    boolean mask is True where a query may attend to a key, a float mask is added to the scores."""
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    if dropout > 0:
        probs = _Dropout.apply(probs, dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous()


def _hand_written(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                  dropout: float, max_keys: Mapping[torch.dtype, int], kwargs: dict) -> bool:
    """Whether `attention` computes this call itself: training on the CPU with dropout, or without it over at
    most max_keys[dtype] keys; as many key heads as query heads, and nothing SDPA's wrapper handles beyond a
    padding mask."""
    if not (module.training and 0 <= dropout < 1 and query.device.type == "cpu" and torch.is_grad_enabled()):
        return False
    if dropout == 0 and key.shape[2] > max_keys.get(query.dtype, 0):
        return False
    if query.shape[1] != key.shape[1] or any(kwargs.get(name) is not None for name in _SDPA_ONLY):
        return False
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    return mask is not None or not causal or query.shape[2] == 1


_SDPA_ONLY = ("position_bias", "cache", "softcap", "sliding_window", "s_aux")


def attention_name(hand_written_max_keys: Mapping[torch.dtype, int] = HAND_WRITTEN_MAX_KEYS) -> str:
    """The name under which `attention` with this threshold is registered: ATTENTION for the default, else
    ATTENTION with the threshold spelt out, so two models trained with different thresholds never share one."""
    if dict(hand_written_max_keys) == dict(HAND_WRITTEN_MAX_KEYS):
        return ATTENTION
    limits = sorted((str(dtype).removeprefix("torch."), int(n)) for dtype, n in hand_written_max_keys.items())
    return "_".join([ATTENTION, "max_keys", *(f"{dtype}_{n}" for dtype, n in limits)])


def register_attention(hand_written_max_keys: Mapping[torch.dtype, int] = HAND_WRITTEN_MAX_KEYS) -> str:
    """Register `attention` with this threshold, and SDPA's mask, with transformers; returns the name. Doing so
    again is harmless: the name carries the threshold, so it is bound to an equal function. transformers has
    no public way to unregister, so the name stays (unused once no model points at it)."""
    name = attention_name(hand_written_max_keys)
    limits = MappingProxyType(dict(hand_written_max_keys))
    AttentionInterface.register(name, partial(attention, hand_written_max_keys=limits))
    AttentionMaskInterface.register(name, sdpa_mask)
    return name


def _transformers_configs(model: nn.Module) -> list[PretrainedConfig]:
    """Every transformers config of `model`'s modules and their sub-configs, each once, parents first."""
    found: dict[int, PretrainedConfig] = {}

    def add(config: Any) -> None:
        if isinstance(config, PretrainedConfig) and id(config) not in found:
            found[id(config)] = config
            for key in getattr(config, "sub_configs", {}):
                add(getattr(config, key, None))
    for module in model.modules():
        add(getattr(module, "config", None))
    return list(found.values())


def install_fast_dropout(model: nn.Module,
                         hand_written_max_keys: Mapping[torch.dtype, int] = HAND_WRITTEN_MAX_KEYS
                         ) -> Callable[[], None]:
    """Swap the class of every plain nn.Dropout in `model` to FastDropout, in place, and point every
    transformers config of `model` on SDPA at `attention` with this threshold; returns the function that puts
    back what this call changed (those modules' class, every config's attention implementation)."""
    configs = _transformers_configs(model)
    before = [(config, config._attn_implementation) for config in configs]
    name = register_attention(hand_written_max_keys)
    for config in configs:
        if config._attn_implementation == "sdpa":
            config._attn_implementation = name
    swapped = [module for module in model.modules() if type(module) is nn.Dropout]
    for module in swapped:
        module.__class__ = FastDropout

    def undo() -> None:
        for module in swapped:
            if type(module) is FastDropout:
                module.__class__ = nn.Dropout
        for config, implementation in before:  # parents first: a parent's setter also sets its sub-configs
            config._attn_implementation = implementation
    return undo
