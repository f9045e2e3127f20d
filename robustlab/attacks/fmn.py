"""The fast minimum-norm attack (Pintor et al., 2021): how far is each example from the boundary?

A fixed-budget attack answers "is there an adversarial example within eps?"; a minimum-norm
attack answers "what is the smallest perturbation that fools the model?", per example. FMN walks
along the gradient of the logit margin inside an Lp ball whose radius it adapts at every step:
it shrinks the ball while the iterate is adversarial and grows it (or jumps to a linear estimate
of the boundary) while it is not, keeping the smallest adversarial perturbation found.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_generator, check_images, check_labels, check_logits, check_number, eval_mode
from ._geometry import NORMS, TINY, geometry
from ._loss import margin

__all__ = ["fmn", "MinNorm"]


class MinNorm(NamedTuple):
    """Result of :func:`fmn`.

    Attributes:
        x_adv: (N, C, H, W) in [0, 1]: the smallest adversarial example found per example;
            ``x`` itself where the model is already wrong, or where none was found.
        norm: (N,) norm of ``x_adv - x`` in the attack's norm: 0 where the model is already
            wrong, ``inf`` where no adversarial example was found.
    """

    x_adv: Tensor
    norm: Tensor


def _cosine(start: float, end: float, k: int, steps: int) -> float:
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * k / steps))


def fmn(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "l2", steps: int = 100,
        alpha_init: float = 1.0, gamma_init: float = 0.05, generator: torch.Generator | None = None
        ) -> MinNorm:
    """Fast minimum-norm attack (Pintor et al., 2021), L2 or Linf: the smallest fooling perturbation.

    From ``delta = 0`` each step descends the margin ``logits_y - max_{j != y} logits_j`` by a
    normalised gradient step of length ``alpha`` (cosine-annealed from ``alpha_init`` to
    ``alpha_init / 100``) and projects onto a norm ball of radius ``r`` and onto [0, 1]. ``r``
    adapts per example: while the iterate is adversarial it shrinks to ``min(r, ||delta||) *
    (1 - gamma)``; while it is not, it grows by ``(1 + gamma)`` once an adversarial point has
    been found, and before that jumps to the linear estimate of the boundary, ``||delta|| +
    margin / ||grad||_dual``, times ``(1 + gamma)`` (a small overshoot, so that a boundary that
    curves away from its linear estimate is still crossed). ``gamma`` is cosine-annealed from ``gamma_init`` to
    ``gamma_init / 50``. The attack is deterministic.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: true labels, (N,) int64.
        norm: ``"l2"`` or ``"linf"``: the norm to minimise.
        steps: iterations, >= 1.
        alpha_init: first step length (in L2 units), > 0.
        gamma_init: first relative change of the radius, in (0, 1).
        generator: accepted for a uniform attack interface; FMN draws nothing, so it is unused.

    Returns:
        A :class:`MinNorm` ``(x_adv, norm)``.
    """
    norm = check_choice(norm, "norm", NORMS)
    check_images(x)
    check_labels(y, x)
    check_number(steps, "steps", low=1, integer=True)
    check_number(alpha_init, "alpha_init", low=0.0, strict=True)
    check_number(gamma_init, "gamma_init", low=0.0, strict=True)
    if gamma_init >= 1:
        raise ValueError(f"gamma_init must be in (0, 1), got {gamma_init!r}")
    check_generator(generator, x)
    geo, l2 = geometry(norm), geometry("l2")
    x = x.detach()
    n = x.shape[0]
    best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
    best_x = x.clone()
    if n == 0:
        return MinNorm(best_x, best_norm)
    delta = torch.zeros_like(x)
    radius = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    with eval_mode(model):
        for k in range(steps + 1):
            x_in = (x + delta).requires_grad_(True)
            logits = model(x_in)
            if k == 0:
                check_logits(logits, y, n)
            m = margin(logits, y)  # (N,)
            (grad,) = torch.autograd.grad(m.sum(), x_in)
            m = m.detach()
            d_norm = geo.norm(delta)
            adv = m < 0
            improved = adv & (d_norm < best_norm)
            best_norm = torch.where(improved, d_norm, best_norm)
            best_x = torch.where(improved.view(-1, 1, 1, 1), x_in.detach(), best_x)
            found |= adv
            if k == steps:
                break
            gamma = _cosine(gamma_init, gamma_init / 50, k, steps)
            alpha = _cosine(alpha_init, alpha_init / 100, k, steps)
            # Before the first success: the linear estimate of the boundary, enlarged by gamma so
            # that a boundary curving away from the estimate is still crossed.
            boundary = (d_norm + m / geo.dual_norm(grad).clamp_min(TINY)) * (1 + gamma)
            radius = torch.where(adv, torch.minimum(radius, d_norm) * (1 - gamma),
                                 torch.where(found, radius * (1 + gamma), boundary))
            # Descend the margin, then project onto the radius ball and the image box.
            moved = l2.step(x + delta, -grad, alpha)
            delta = geo.project(moved, x, radius) - x
    return MinNorm(best_x, best_norm)
