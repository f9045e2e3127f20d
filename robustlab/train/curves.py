"""Training curves: held-out clean, FGSM and PGD accuracy after every epoch.

:func:`robust_probe` builds the ``on_epoch`` callback of :func:`robustlab.train.fit` that
measures them, which is what shows the training dynamics a single final number hides:
catastrophic overfitting (FGSM accuracy rising while PGD accuracy collapses, Wong, Rice & Kolter
2020) and robust overfitting (held-out PGD accuracy peaking and then falling while training goes
on, Rice, Wong & Kolter 2020). :func:`best_epoch` reads the early-stopping epoch off a history.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import attacks
from .._checks import check_choice, check_images, check_labels, check_number
from .loop import evaluate_accuracy

__all__ = ["robust_probe", "best_epoch"]


def robust_probe(x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
                 alpha: float | None = None, prefix: str = "heldout", fgsm: bool = True,
                 seed: int = 0) -> Callable[[int, nn.Module], dict[str, float]]:
    """An ``on_epoch`` callback: clean, FGSM and PGD-``steps`` accuracy of the model on ``(x, y)``.

    The PGD start is drawn from a generator seeded with ``seed`` every epoch, so the epochs are
    compared on the same random starts. The numbers are upper bounds on robust accuracy (one
    PGD run, no restarts): a curve to watch, not a robustness claim.

    Args:
        x: held-out images (N, C, H, W) in [0, 1], on the model's device.
        y: their labels (N,) int64.
        eps: the radius to attack at.
        norm: ``"linf"`` or ``"l2"``; FGSM (``fgsm=True``) needs ``"linf"``.
        steps: PGD steps, >= 1.
        alpha: PGD step size; None takes the library's default ``2.5 eps / steps``.
        prefix: the history keys are ``<prefix>_clean``, ``<prefix>_fgsm``, ``<prefix>_pgd``.
        fgsm: also measure FGSM accuracy (the number catastrophic overfitting inflates).
        seed: seed of the PGD random start.

    Returns:
        ``on_epoch(epoch, model) -> dict`` for :func:`robustlab.train.fit`.
    """
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    norm = check_choice(norm, "norm", attacks.NORMS)
    check_number(steps, "steps", low=1, integer=True)
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"prefix must be a short name such as 'heldout', got {prefix!r}")
    if fgsm and norm != "linf":
        raise ValueError(f"fgsm=True measures FGSM, an Linf attack, but norm={norm!r}; pass fgsm=False for L2")

    def probe(epoch: int, model: nn.Module) -> dict[str, float]:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        x_pgd = attacks.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, generator=generator)
        row = {f"{prefix}_clean": evaluate_accuracy(model, x, y), f"{prefix}_pgd": evaluate_accuracy(model, x_pgd, y)}
        if fgsm:
            row[f"{prefix}_fgsm"] = evaluate_accuracy(model, attacks.fgsm(model, x, y, eps=eps), y)
        return row

    return probe


def best_epoch(history: Sequence[Mapping[str, float]], key: str = "heldout_pgd") -> int:
    """The epoch (counted from 1) with the highest ``key`` in a training history: early stopping.

    Ties go to the earliest such epoch. Raises ``ValueError`` naming the keys the history has
    when ``key`` is missing from any row.
    """
    if not history:
        raise ValueError("history is empty: train for at least one epoch first")
    missing = [row.get("epoch", i + 1) for i, row in enumerate(history) if key not in row]
    if missing:
        raise ValueError(f"key={key!r} is missing from the history rows of epochs {missing[:5]}; "
                         f"the rows have {sorted(history[0])}; pass on_epoch=robust_probe(...) to fit")
    best = max(range(len(history)), key=lambda i: (history[i][key], -i))
    return int(history[best].get("epoch", best + 1))
