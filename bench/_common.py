"""Helpers shared by the benchmarks: the model and batch, synchronised timing, paired repeats."""

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


def model_and_batch(arch: str, batch: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A freshly initialised ``arch`` model in eval mode (seed 0) and a batch for it: real embedded
    MNIST digits, or uniform noise with random labels for the CIFAR-sized PreAct ResNet."""
    from robustlab import data, models

    torch.manual_seed(0)
    model = models.create(arch).to(device).eval()
    if arch == "preact-resnet18":
        x = torch.rand(batch, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
    else:
        emb = data.embedded_mnist()
        idx = torch.randperm(5000)[:batch]
        x, y = emb.x[idx].to(device), emb.y[idx].to(device)
    return model, x, y


def where(device: torch.device) -> str:
    """What runs the benchmark, for its first line: the GPU's name, or the CPU thread count."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
