"""The attacks' objectives, per example: cross-entropy, the CW margin and the DLR losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "per_example_loss", "margin", "dlr_loss", "targeted_dlr_loss"]

LOSSES = ("ce", "cw")

# Keeps DLR's denominator positive when the top logits tie.
_DLR_TINY = 1e-12


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``logits_y - max_{j != y} logits_j`` per example, (N,): negative exactly when fooled."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - others.amax(dim=1)


def per_example_loss(logits: Tensor, y: Tensor, loss: str = "ce") -> Tensor:
    """The attack objective for each example, (N,).

    ``"ce"`` is the cross-entropy; ``"cw"`` is Carlini & Wagner's margin
    ``max_{j != y} logits_j - logits_y`` without the confidence clamp (as used with PGD by
    Madry et al.), positive exactly when the example is misclassified; ``"dlr"`` is Croce &
    Hein's scale-invariant difference of logits ratio (:func:`dlr_loss`).

    Args:
        logits: (N, K) unnormalised scores.
        y: (N,) int64 labels.
        loss: ``"ce"``, ``"cw"`` or ``"dlr"``.

    Returns:
        (N,) loss per example, higher means more adversarial for an untargeted attack.
    """
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "dlr":
        return dlr_loss(logits, y)
    return -margin(logits, y)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Croce & Hein's (2020) difference of logits ratio, (N,); higher is more adversarial.

    ``-(z_y - max_{j != y} z_j) / (z_(1) - z_(3))`` with ``z_(i)`` the i-th largest logit: the
    CW margin divided by a spread of the logits, so rescaling the logits (a temperature, or a
    saturated softmax) changes nothing. Needs at least 3 classes.
    """
    top = logits.topk(3, dim=1).values  # (N, 3), descending
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + _DLR_TINY)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """The targeted DLR loss of APGD-T, (N,); higher means closer to classifying as ``target``.

    ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``. Needs at least 4 classes.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    top = logits.topk(4, dim=1).values  # (N, 4), descending
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY)
