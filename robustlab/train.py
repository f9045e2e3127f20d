"""One training loop for standard and robust training.

Methods (``TrainConfig.method``):

- ``"standard"``: cross-entropy on clean images.
- ``"pgd"``: Madry et al. (2018): cross-entropy on PGD-k adversarial examples (Linf or L2).
- ``"fgsm_rs"``: Wong, Rice & Kolter (2020): a random start in the eps-box plus one FGSM step
  of ``alpha = 1.25 eps``, with a cyclic learning rate and a guard against catastrophic
  overfitting (a PGD check after every epoch; on a collapse the previous epoch's weights are
  restored and training stops).
- ``"fgsm"``: plain FGSM adversarial training (Goodfellow et al., 2015), no random start.
- ``"trades"``: Zhang et al. (2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'``
  maximising the KL divergence in the eps-ball.
- ``"gradreg"``: Ross & Doshi-Velez (2018), "double backprop":
  ``CE + lam * ||grad_x CE||_2^2`` per example.
- ``"gaussian"``: Cohen et al. (2019): cross-entropy on ``x + N(0, sigma^2)``, fresh noise
  every batch (no clamping, as in the paper).
- ``"ibp"``: Gowal et al. (2018), interval bound propagation: ``kappa * CE(f(x), y) +
  (1 - kappa) * CE(z_worst, y)`` with ``z_worst`` the interval bound's worst-case margins
  (:func:`robustlab.bounds.worst_case_logits`), after ``warmup_epochs`` of clean training, eps
  and kappa ramped together over ``eps_ramp_epochs`` (kappa from 1 to ``kappa_end``).

Every epoch's randomness (shuffling, random starts, noise, dropout) is derived from
``(seed, epoch)``, so a run killed and resumed from its last checkpoint ends with the same
weights as an uninterrupted one. Under ``torchrun`` the loop uses DistributedDataParallel: each
process takes its share of every global batch, so the run matches a single process.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from . import attacks
from ._checks import check_choice, check_images, check_labels, check_number, eval_mode

__all__ = ["TrainConfig", "TrainResult", "fit", "training_loss", "METHODS", "evaluate_accuracy",
           "random_shift"]

log = logging.getLogger(__name__)

METHODS = ("standard", "pgd", "fgsm_rs", "fgsm", "trades", "gradreg", "gaussian", "ibp")
ADVERSARIAL = ("pgd", "fgsm_rs", "fgsm", "trades")
SCHEDULES = ("constant", "cyclic", "cosine")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """A training recipe. Every field is plain data, so a config round-trips through JSON."""

    method: str = "standard"
    epochs: int = 10
    # Global batch size: under torchrun it is split evenly across the processes.
    batch_size: int = 100
    optimizer: str = "adam"
    # Peak learning rate; the schedule scales it per batch.
    lr: float = 1e-3
    # "cyclic" is Wong et al.'s triangle: 0 -> lr at 40 % of training -> 0.
    schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Threat model for pgd / fgsm_rs / fgsm / trades, in pixel units.
    norm: str = "linf"
    eps: float = 0.3
    # Ramp eps linearly from 0 over this many epochs: PGD training at eps 0.3 from the first
    # batch can stall at chance on MNIST.
    eps_ramp_epochs: float = 0.0
    # Clean epochs before the eps ramp starts (Gowal et al.'s warm-up for ibp).
    warmup_epochs: float = 0.0
    # ibp: the weight of the clean cross-entropy, ramped from 1 to this value with eps (Gowal et
    # al.'s kappa); the rest of the loss is the cross-entropy of the interval bound's worst case.
    kappa_end: float = 0.5
    # Step size; None picks the papers' defaults: 2.5 eps / steps (Madry et al.) for pgd and
    # trades, 1.25 eps for fgsm_rs (Wong et al.), eps for fgsm.
    alpha: float | None = None
    # Inner PGD steps for pgd and trades.
    steps: int = 10
    # TRADES trade-off between accuracy and robustness (1/lambda in the paper).
    beta: float = 6.0
    # Weight of the squared input-gradient norm for gradreg.
    lam: float = 1.0
    # Noise level for gaussian, in pixel units.
    sigma: float = 0.25
    # fgsm_rs guard: roll back and stop when PGD accuracy on a fixed training batch falls by
    # more than this (absolute) below its best.
    guard_drop: float = 0.2
    guard_steps: int = 10
    # Augmentation: translate each clean image by up to this many pixels (zero padding).
    shift: int = 0
    seed: int = 0

    def validate(self) -> None:
        """Raises a ValueError naming the field, the value and the fix for a bad setting."""
        check_choice(self.method, "method", METHODS)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.schedule, "schedule", SCHEDULES)
        check_choice(self.norm, "norm", attacks.NORMS)
        check_number(self.epochs, "epochs", low=1, integer=True)
        check_number(self.batch_size, "batch_size", low=1, integer=True)
        check_number(self.lr, "lr", low=0.0, strict=True)
        check_number(self.momentum, "momentum", low=0.0)
        check_number(self.weight_decay, "weight_decay", low=0.0)
        check_number(self.eps, "eps", low=0.0)
        check_number(self.eps_ramp_epochs, "eps_ramp_epochs", low=0.0)
        check_number(self.warmup_epochs, "warmup_epochs", low=0.0)
        check_number(self.kappa_end, "kappa_end", low=0.0)
        if self.kappa_end > 1:
            raise ValueError(f"kappa_end is the clean loss's weight at the end of the ramp, in [0, 1]; "
                             f"got {self.kappa_end}")
        if self.alpha is not None:
            check_number(self.alpha, "alpha", low=0.0, strict=True)
        check_number(self.steps, "steps", low=1, integer=True)
        check_number(self.beta, "beta", low=0.0)
        check_number(self.lam, "lam", low=0.0)
        check_number(self.sigma, "sigma", low=0.0, strict=True)
        check_number(self.guard_drop, "guard_drop", low=0.0, strict=True)
        check_number(self.guard_steps, "guard_steps", low=1, integer=True)
        check_number(self.shift, "shift", low=0, integer=True)
        check_number(self.seed, "seed", low=0, integer=True)
        if self.method in ("fgsm_rs", "fgsm") and self.norm != "linf":
            raise ValueError(f"method={self.method!r} is a Linf method, got norm={self.norm!r}; "
                             f"use method='pgd' for L2 adversarial training")
        if self.method == "ibp" and self.norm != "linf":
            raise ValueError(f"method='ibp' trains against Linf interval bounds, got norm={self.norm!r}; "
                             f"use norm='linf'")
        if self.method in ADVERSARIAL + ("ibp",) and self.eps == 0:
            raise ValueError(f"method={self.method!r} needs eps > 0, got eps=0; "
                             f"use method='standard' for clean training")

    def step_size(self, eps: float) -> float:
        """The inner step size at radius ``eps`` (the ramped one during the ramp)."""
        if self.alpha is not None:
            return self.alpha
        if self.method == "fgsm_rs":
            return 1.25 * eps
        if self.method == "fgsm":
            return eps
        return 2.5 * eps / self.steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}; valid fields are "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**values)


class TrainResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        history: one dict per finished epoch (epoch, loss, accuracy on the training inputs the
            method used, lr, eps, seconds, and for fgsm_rs the guard's PGD accuracy).
        stopped: None, or why training stopped early (the fgsm_rs guard).
        seconds: wall-clock training time of this call (a resumed run counts only its part).
    """

    history: list[dict[str, float]]
    stopped: str | None
    seconds: float


def _generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """An independent, reproducible random stream for one purpose in one epoch."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 101 + stream) % (2 ** 63))
    return g


def random_shift(x: Tensor, shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translates each image by its own random (dy, dx) in [-shift, shift], filling with 0.

    Args:
        x: images, (N, C, H, W).
        shift: largest translation in pixels, >= 0.
        generator: random source for the offsets (on x's device).

    Returns:
        The translated images, same shape as x.
    """
    if shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, C, H, W)


def _lr_factor(schedule: str, t: float) -> float:
    """Learning-rate multiplier at training progress t in [0, 1]."""
    if schedule == "constant":
        return 1.0
    if schedule == "cyclic":
        return t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _trades_adversary(model: nn.Module, x: Tensor, p_clean: Tensor, eps: float, alpha: float,
                      steps: int, norm: str, generator: torch.Generator) -> Tensor:
    """TRADES' inner maximisation of KL(f(x) || f(x')) over the eps-ball, from x + 0.001 N(0, I)."""
    start = 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = (x + start).clamp(0.0, 1.0)
    for _ in range(steps):
        x_in = x_adv.detach().requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_in), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, x_in)
        x_adv = attacks.pgd_step(x_in.detach(), x, grad, alpha=alpha, eps=eps, norm=norm)
    return x_adv.detach()


def training_loss(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig, *,
                  eps: float | None = None, generator: torch.Generator | None = None,
                  attack_model: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """The method's loss on one batch, and the logits it was computed from.

    Args:
        model: the model being trained (in train mode), maybe wrapped in DDP.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        config: the recipe; ``config.method`` picks the objective.
        eps: the current radius (the ramped one); default ``config.eps``.
        generator: random source for starts and noise.
        attack_model: the unwrapped model for inner attacks (default ``model``).

    Returns:
        ``(loss, logits)``: the scalar mean loss over the batch, and the (N, K) logits on the
        inputs the loss saw (adversarial or noisy ones for the robust methods).
    """
    eps = config.eps if eps is None else eps
    attack_model = model if attack_model is None else attack_model
    method = config.method
    if method == "ibp":
        from .bounds import worst_case_logits

        # Gowal et al.: kappa * CE(clean) + (1 - kappa) * CE(worst case of the interval bound),
        # kappa ramped from 1 to kappa_end as eps grows to config.eps.
        kappa = 1.0 - (1.0 - config.kappa_end) * (eps / config.eps if config.eps else 0.0)
        logits = model(x)
        loss = kappa * F.cross_entropy(logits, y)
        if eps > 0:
            loss = loss + (1.0 - kappa) * F.cross_entropy(worst_case_logits(attack_model, x, y, eps=eps), y)
        return loss, logits
    if method == "standard" or (method in ADVERSARIAL and eps == 0):
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    if method == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        logits = model(x + config.sigma * noise)
        return F.cross_entropy(logits, y), logits
    if method == "gradreg":
        x_in = x.detach().requires_grad_(True)
        logits = model(x_in)
        ce = F.cross_entropy(logits, y, reduction="none")  # (N,)
        # Per-example input gradients (each CE_i depends on x_i only); create_graph keeps them
        # differentiable so the penalty is trained through ("double backprop").
        (grad,) = torch.autograd.grad(ce.sum(), x_in, create_graph=True)
        penalty = grad.flatten(1).pow(2).sum(dim=1)  # (N,)
        return (ce + config.lam * penalty).mean(), logits
    alpha = config.step_size(eps)
    if method == "trades":
        with torch.no_grad(), eval_mode(attack_model):
            p_clean = F.softmax(attack_model(x), dim=1)
        with eval_mode(attack_model):
            x_adv = _trades_adversary(attack_model, x, p_clean, eps, alpha, config.steps,
                                      config.norm, generator)
        # One forward over both halves: DistributedDataParallel allows one forward per backward.
        logits, logits_adv = model(torch.cat([x, x_adv])).split(x.shape[0])
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(logits, y) + config.beta * robust, logits_adv
    steps = config.steps if method == "pgd" else 1
    x_adv = attacks.pgd(attack_model, x, y, eps=eps, alpha=alpha, steps=steps, norm=config.norm,
                        random_start=method != "fgsm", generator=generator)
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits


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
        checkpoint: str | os.PathLike | None = None, progress: bool = True) -> TrainResult:
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

    Returns:
        A :class:`TrainResult` with the per-epoch history.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a robustlab.train.TrainConfig, got {type(config).__name__}")
    config.validate()
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
        if config.method in ADVERSARIAL + ("ibp",):
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
        history.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if ckpt_path is not None and rank == 0:
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "history": history, "epoch": epoch + 1, "stopped": stopped,
                          "config": config.to_dict()}, ckpt_path)
    model.eval()
    return TrainResult(history, stopped, time.perf_counter() - t_start)
