"""Whether other work already keeps this machine's cores busy when training starts.

torch runs one intra-op thread per core by default. On a machine where another job already uses the cores,
those threads wait for each other at every operation: on 2 cores with one other job running, 2 threads ran
7-10x slower than 1 (plain transformers code too). Nothing in the numbers says why, so a run says it once, at
the start, from the 1-minute load average (docs/speed.md).
"""
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)
BUSY_SHARE = 0.5  # other work holding half the cores or more (1-minute load average) counts as busy
WINDOW_S = 60.0  # the load average's time constant: this process's share is spread over at least this


def others_load() -> float | None:
    """The 1-minute load average less this process's own recent work (its data loading and model building
    count in the average too); None where the OS gives no load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows; a system without /proc/loadavg
        return None
    return max(0.0, load - own_load())


def own_load() -> float:
    """Cores this process kept busy, on average, over its life or the last minute if it is younger: its CPU
    time (all threads) over its age; 0 where the OS does not give its start time."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return time.process_time() / max(uptime - started, WINDOW_S)


def busy_warning(threads: int) -> str | None:
    """The warning to give before training on `threads` torch threads, or None: with one thread there is no
    contention to avoid, and a machine whose load (others') is under half its cores is not busy."""
    cores = os.cpu_count() or 1
    load = others_load()
    if threads < 2 or load is None or load < BUSY_SHARE * cores:
        return None
    return (f"the cores are busy before training starts: 1-minute load average {load:.1f} on {cores} cores besides "
            f"this process; torch's {threads} threads will wait on each other and on that work, which can make "
            f"each step several times slower: try --threads 1 (Python: torch.set_num_threads(1)), or as many "
            f"threads as idle cores (docs/speed.md)")


def warn_if_busy(threads: int) -> None:
    """One warning (log level WARNING, shown without any logging set up) when `busy_warning` has one."""
    message = busy_warning(threads)
    if message is not None:
        log.warning(message)
