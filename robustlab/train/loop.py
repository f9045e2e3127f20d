"""The training loop: :func:`fit` (schedules, eps ramp, checkpoints and resume, DDP, the fgsm_rs
guard) and :func:`evaluate_accuracy`."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import attacks
from .._checks import check_images, check_labels, eval_mode
from .config import ADVERSARIAL, CERTIFIED, TrainConfig, TrainResult
from .losses import random_shift, training_loss

__all__ = ["fit", "evaluate_accuracy"]

log = logging.getLogger("robustlab.train")


def _generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """An independent, reproducible random stream for one purpose in one epoch."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 101 + stream) % (2 ** 63))
    return g


def _lr_factor(schedule: str, t: float) -> float:
    """Learning-rate multiplier at training progress t in [0, 1]."""
    if schedule == "constant":
        return 1.0
    if schedule == "cyclic":
        return t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def evaluate_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500) -> float:
    """Clean accuracy of ``model`` on ``(x, y)``, in eval mode, batched; mode restored."""
    check_images(x)
    check_labels(y, x)
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad(), eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            correct += (model(xb).argmax(dim=1) == yb).sum()
    return float(correct) / max(1, x.shape[0])


def _atomic_save(obj: Any, path: Path) -> None:
    """Writes to a temporary file beside ``path``, then renames: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def fit(model: nn.Module, data: Sequence[Tensor], config: TrainConfig, *,
        checkpoint: str | os.PathLike | None = None, progress: bool = True,
        on_epoch: Callable[[int, nn.Module], Mapping[str, float]] | None = None) -> TrainResult:
    """Trains ``model`` in place on ``data = (x, y)`` with ``config``'s method.

    With ``checkpoint``, the state (weights, optimizer, history) is written atomically after
    every epoch, and a run started with an existing checkpoint resumes after its last epoch.
    Under ``torchrun`` (a process group is initialised, or ``WORLD_SIZE`` > 1 in the
    environment), the model is wrapped in DistributedDataParallel for the run.

    Args:
        model: the model to train; it is left in eval mode.
        data: ``(x, y)``: images (N, C, H, W) in [0, 1] on the CPU or the model's device, and
            labels (N,) int64.
        config: the recipe (method, epochs, optimiser, threat model, seed ...).
        checkpoint: path of the checkpoint file to write and to resume from.
        progress: show a tqdm bar per epoch with the running loss and accuracy.
        on_epoch: called after every epoch as ``on_epoch(epoch, model)`` (epochs count from 1,
            the model in eval mode); the numbers it returns join that epoch's history row and
            its checkpoint, e.g. held-out robust accuracy for a training curve or early stopping.

    Returns:
        A :class:`TrainResult` with the per-epoch history.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a robustlab.train.TrainConfig, got {type(config).__name__}")
    config.validate()
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a function (epoch, model) -> dict, got {type(on_epoch).__name__}")
    if data is None or len(data) != 2:
        raise ValueError("data must be a pair (x, y) of tensors, e.g. robustlab.data.load('mnist', 'train')")
    x, y = data
    check_images(x)
    check_labels(y, x)
    if x.shape[0] == 0:
        raise ValueError("data is empty: x has 0 examples; check the data root and split")
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to train")
    device = params[0].device
    dtype = params[0].dtype if params[0].is_floating_point() else torch.float32

    if not (dist.is_available() and dist.is_initialized()) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {world} "
                         f"processes, so that every process gets an equal share")
    local_batch = config.batch_size // world
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    optimizer = _make_optimizer(model, config)
    history: list[dict[str, float]] = []
    start_epoch, stopped = 0, None
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["config"] != config.to_dict():
            raise ValueError(f"checkpoint {ckpt_path} was written with another config; "
                             f"delete it or pass the config it was made with")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, stopped = state["history"], state["epoch"], state["stopped"]
        log.info("resumed from %s after epoch %d", ckpt_path, start_epoch)

    n = x.shape[0]
    batches = n // config.batch_size  # drop the last partial batch: equal shares under DDP
    if batches == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the {n} training examples")
    total_steps = config.epochs * batches
    guard_x = guard_y = None
    # fgsm_rs rolls back on the guard; plain fgsm only records it, so its history shows the
    # catastrophic overfitting the guard exists to stop.
    if config.method in ("fgsm_rs", "fgsm"):
        g = _generator(config.seed, 0, 99, torch.device("cpu"))
        idx = torch.randperm(n, generator=g)[:min(n, 1000)]
        guard_x, guard_y = x[idx].to(device, dtype), y[idx].to(device)
    best_guard = max((h.get("guard_accuracy", -1.0) for h in history), default=-1.0)
    previous_state = copy.deepcopy(model.state_dict()) if config.method == "fgsm_rs" else None

    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stopped:
            break
        t_epoch = time.perf_counter()
        torch.manual_seed(config.seed * 7919 + epoch)  # dropout and other global-RNG layers
        order = torch.randperm(n, generator=_generator(config.seed, epoch, 0, torch.device("cpu")))
        gen = _generator(config.seed, epoch, 1 + rank, device)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = tqdm(range(batches), desc=f"epoch {epoch + 1}/{config.epochs} [{config.method}]",
                   disable=not progress or rank != 0, leave=False)
        for b in bar:
            step = epoch * batches + b
            lr = config.lr * _lr_factor(config.schedule, step / total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            after = step - config.warmup_epochs * batches  # steps since the warm-up ended
            if after < 0:
                ramp = 0.0
            else:
                ramp = min(1.0, after / (config.eps_ramp_epochs * batches)) if config.eps_ramp_epochs else 1.0
            eps = config.eps * ramp
            sl = order[b * config.batch_size + rank * local_batch: b * config.batch_size + (rank + 1) * local_batch]
            xb, yb = x[sl].to(device, dtype, non_blocking=True), y[sl].to(device, non_blocking=True)
            xb = random_shift(xb, config.shift, gen)
            loss, logits = training_loss(net, xb, yb, config, eps=eps, generator=gen, attack_model=model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * yb.shape[0]
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            seen += yb.shape[0]
            if progress and rank == 0 and b % 20 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{float(correct) / seen:.3f}",
                                eps=f"{eps:.3f}")
        bar.close()
        if world > 1:
            stats = torch.stack([loss_sum, correct.to(loss_sum.dtype), torch.tensor(float(seen), device=device)])
            dist.all_reduce(stats)
            loss_sum, correct, seen = stats[0], stats[1], int(stats[2])
        row = {"epoch": epoch + 1, "loss": float(loss_sum) / seen, "accuracy": float(correct) / seen,
               "lr": lr, "seconds": time.perf_counter() - t_epoch}
        if config.method in ADVERSARIAL + CERTIFIED:
            row["eps"] = eps
        if config.method in ("fgsm_rs", "fgsm"):
            x_pgd = attacks.pgd(model, guard_x, guard_y, eps=eps, alpha=eps / 4,
                                steps=config.guard_steps, norm="linf",
                                generator=_generator(config.seed, epoch, 98, device))
            row["guard_accuracy"] = evaluate_accuracy(model, x_pgd, guard_y)
            guarded = config.method == "fgsm_rs"  # plain fgsm: recorded only
            if guarded and row["guard_accuracy"] < best_guard - config.guard_drop:
                model.load_state_dict(previous_state)
                stopped = (f"catastrophic overfitting at epoch {epoch + 1}: PGD accuracy on the "
                           f"guard batch fell from {best_guard:.3f} to {row['guard_accuracy']:.3f}; "
                           f"weights of epoch {epoch} restored")
                log.warning(stopped)
                row["rolled_back"] = 1.0
            elif guarded:
                best_guard = max(best_guard, row["guard_accuracy"])
                previous_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            model.eval()
            extra = on_epoch(epoch + 1, model)
            if not isinstance(extra, Mapping):
                raise TypeError(f"on_epoch must return a dict of numbers, got {type(extra).__name__}")
            clash = sorted(set(extra) & set(row))
            if clash:
                raise ValueError(f"on_epoch returned {clash}, which the history row already has; rename them")
            row.update({str(k): float(v) for k, v in extra.items()})
        history.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if ckpt_path is not None and rank == 0:
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "history": history, "epoch": epoch + 1, "stopped": stopped,
                          "config": config.to_dict()}, ckpt_path)
    model.eval()
    return TrainResult(history, stopped, time.perf_counter() - t_start)
