"""Memory that torch frees stays in the process for the next step to reuse (glibc's malloc only).

A training step allocates and frees the same large tensors every step: autocast's fp32 weight gradients
(2.4 MB for each of MiniLM's feed-forward weights), activations, optimizer temporaries. glibc serves a block
above its mmap threshold (128 KiB at first, raised as such blocks are freed, at most 32 MiB) with fresh
pages from the kernel and gives them back on free, and trims the top of its heap once more than twice that
threshold is free there. Either way the next step touches fresh pages: a page fault and the kernel's zeroing
for every 4 KiB, thousands a step, each costing microseconds on a virtual machine. `retain_freed_memory`
fixes the mmap threshold at 64 MiB and the trim threshold at 1 GiB (`mallopt`): blocks below 64 MiB come
from the heap and freed memory stays there for reuse.

Process-wide, and for the rest of the process (glibc has no call that brings back its adjusting thresholds):
the resident memory no longer shrinks when tensors are freed, up to the peak a step reaches. No effect where
the C library is not glibc.
"""
import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD, TRIM_THRESHOLD = 64 << 20, 1 << 30
_retained = False


def retain_freed_memory() -> bool:
    """Set glibc's thresholds once per process; returns whether they are set (False off glibc)."""
    global _retained
    if not _retained and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _retained = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _retained
