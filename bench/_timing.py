"""Timing helpers shared by the benchmarks: synchronised wall-clock timing and paired repeats."""

from __future__ import annotations

import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Waits for queued GPU work, so that a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes, GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def paired_times(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Times every function once per repeat after one warm-up call each, rotating their order
    every repeat so that drifts and position effects (caches, allocator, clock) hit all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for rep in range(repeats):
        for name, fn in items[rep % len(items):] + items[:rep % len(items)]:
            times[name].append(timed(fn, device))
    return times
