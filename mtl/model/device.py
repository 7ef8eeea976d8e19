"""Device and precision: bf16 autocast where the hardware runs it fast, fp32 master weights always."""
import os
from contextlib import nullcontext
from typing import Any, ContextManager

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None: a GPU when there is one, else the CPU. Under torchrun each process on a machine takes its own
    GPU (LOCAL_RANK) when the device names no index ('cuda' or None)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where bf16 matrix products beat fp32 several times."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' picks bf16 on GPUs that support it and on CPUs with fast bf16, else fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> ContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict, device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device`, nested ones too (a teacher's (targets, mask) pairs); the rest as is."""
    return {k: _moved(v, device) for k, v in batch.items()}


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    return value
