"""The training recipe: :class:`TrainConfig` (plain data, JSON round trip) and what a run returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import attacks
from .._checks import check_choice, check_number

__all__ = ["TrainConfig", "TrainResult", "METHODS", "ADVERSARIAL", "CERTIFIED", "SCHEDULES", "OPTIMIZERS"]

METHODS = ("standard", "pgd", "fgsm_rs", "fgsm", "trades", "gradreg", "gaussian", "ibp", "crown_ibp")
CERTIFIED = ("ibp", "crown_ibp")
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
    # ibp, crown_ibp: the weight of the clean cross-entropy, ramped from 1 to this value with eps
    # (Gowal et al.'s kappa); the rest of the loss is the cross-entropy of the bound's worst case.
    # crown_ibp also ramps the CROWN-IBP bound's weight beta from 1 to 0 with eps (Zhang et al.).
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
        if self.method in CERTIFIED and self.norm != "linf":
            raise ValueError(f"method={self.method!r} trains against Linf bounds, got norm={self.norm!r}; "
                             f"use norm='linf'")
        if self.method in ADVERSARIAL + CERTIFIED and self.eps == 0:
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
