"""FGSM, FGM and projected gradient descent (PGD) in the Linf and L2 threat models.

All attacks share one contract (see CONVENTIONS.md): images ``x`` are (N, C, H, W) in [0, 1],
``eps`` is in pixel units, the result stays in the eps-ball around ``x`` and in [0, 1], the model
is run in eval mode and left exactly as found (parameters, buffers, ``.grad``, ``requires_grad``,
training flags), ``x`` is never modified, and gradients are taken w.r.t. the input only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_flag,
    check_generator,
    check_images,
    check_labels,
    check_logits,
    check_number,
    eval_mode,
)
from ._geometry import NORMS, default_alpha, geometry
from ._loss import LOSSES, per_example_loss

__all__ = ["fgsm", "fgm", "pgd"]


def _attack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
            norm: str, random_start: bool, restarts: int, targeted: bool, loss: str,
            generator: torch.Generator | None) -> Tensor:
    """PGD on checked arguments; FGSM and FGM are its one-step, no-random-start cases."""
    x = x.detach()
    if x.shape[0] == 0:
        return x.clone()
    geo = geometry(norm)
    step = -alpha if targeted else alpha
    starts = geo.random_start(x, eps, restarts=restarts, generator=generator) \
        if random_start and eps > 0 else None
    checked = False
    best_x, best_obj = x, None
    with eval_mode(model):
        for r in range(restarts):
            x_adv = x if starts is None else (x + starts[:, r]).clamp(0.0, 1.0)
            for _ in range(steps):
                x_in = x_adv.detach().requires_grad_(True)
                logits = model(x_in)
                if not checked:
                    check_logits(logits, y, x.shape[0], stacklevel=4)
                    checked = True
                (grad,) = torch.autograd.grad(per_example_loss(logits, y, loss).sum(), x_in)
                x_adv = geo.project(geo.step(x_in.detach(), grad, step), x, eps)
            if restarts == 1:
                best_x = x_adv
                break
            with torch.no_grad():
                logits = model(x_adv)
                if not checked:
                    check_logits(logits, y, x.shape[0], stacklevel=4)
                    checked = True
                obj = per_example_loss(logits, y, loss)
                obj = -obj if targeted else obj
                if best_obj is None:
                    best_x, best_obj = x_adv, obj
                else:
                    better = obj > best_obj  # (N,)
                    best_x = torch.where(better.view(-1, 1, 1, 1), x_adv, best_x)
                    best_obj = torch.where(better, obj, best_obj)
    best_x = best_x.detach()
    return best_x.clone() if best_x.data_ptr() == x.data_ptr() else best_x


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, targeted: bool = False) -> Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015): one signed-gradient Linf step.

    ``x_adv = clamp(x + eps * sign(grad_x CE(model(x), y)), 0, 1)``; with ``targeted=True``
    the step descends the loss of the target labels ``y`` instead.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64 (the target labels when targeted=True).
        eps: Linf radius in pixel units, e.g. 0.3 on MNIST.
        targeted: move towards ``y`` instead of away from it.

    Returns:
        x_adv, same shape, dtype and device as x: ``||x_adv - x||_inf <= eps``, values in [0, 1].
    """
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_flag(targeted, "targeted")
    return _attack(model, x, y, eps=eps, alpha=eps, steps=1, norm="linf", random_start=False,
                   restarts=1, targeted=targeted, loss="ce", generator=None)


def fgm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, targeted: bool = False) -> Tensor:
    """Fast gradient method in L2: one step of length eps along the normalised gradient.

    ``x_adv = clamp(x + eps * g / ||g||_2, 0, 1)`` with ``g = grad_x CE(model(x), y)`` per
    example (Miyato et al.'s L2 analogue of FGSM); an example whose gradient is zero is left
    unchanged.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64 (the target labels when targeted=True).
        eps: L2 radius in pixel units, e.g. 2.0 on MNIST.
        targeted: move towards ``y`` instead of away from it.

    Returns:
        x_adv, same shape, dtype and device as x: ``||x_adv - x||_2 <= eps`` per example, in [0, 1].
    """
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_flag(targeted, "targeted")
    return _attack(model, x, y, eps=eps, alpha=eps, steps=1, norm="l2", random_start=False,
                   restarts=1, targeted=targeted, loss="ce", generator=None)


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float | None = None,
        steps: int,
        norm: str = "linf", random_start: bool = True, restarts: int = 1, targeted: bool = False,
        loss: str = "ce", generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent (Madry et al., 2018) in the Linf or L2 ball.

    Starts uniformly at random in the eps-ball (Linf box or L2 ball) and clamped to [0, 1], or
    at ``x``; each step ascends the loss (descends it when targeted) by ``alpha`` along the
    sign of the gradient (Linf) or the normalised gradient (L2), then projects onto the eps-ball
    around ``x`` and clamps to [0, 1]. With ``restarts > 1`` it keeps, per example, the final
    iterate with the highest loss (the lowest when targeted).

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64 (the target labels when targeted=True).
        eps: radius of the threat model in pixel units, e.g. 0.3 (Linf) or 2.0 (L2) on MNIST.
        alpha: step size in the same units, e.g. 0.01 (Linf) or 0.1 (L2); > 0. None (the
            default) takes Madry et al.'s rule ``2.5 * eps / steps``.
        steps: number of gradient steps, >= 0 (0 returns the random start).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start uniformly in the eps-ball instead of at ``x``.
        restarts: independent runs, >= 1; the worst case per example is kept.
        targeted: move towards the labels ``y`` instead of away from them.
        loss: ``"ce"`` (cross-entropy) or ``"cw"`` (logit margin, see ``per_example_loss``).
        generator: random source for the starts; the same state gives the same result.

    Returns:
        x_adv, same shape, dtype and device as x: ``||x_adv - x||_norm <= eps`` per example,
        values in [0, 1].
    """
    norm = check_choice(norm, "norm", NORMS)
    loss = check_choice(loss, "loss", LOSSES)
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_number(steps, "steps", low=0, integer=True)
    if alpha is None:
        alpha = default_alpha(eps, steps)
    else:
        check_number(alpha, "alpha", low=0.0, strict=True)
    check_number(restarts, "restarts", low=1, integer=True)
    check_flag(random_start, "random_start")
    check_flag(targeted, "targeted")
    check_generator(generator, x)
    return _attack(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm,
                   random_start=random_start, restarts=restarts, targeted=targeted, loss=loss,
                   generator=generator)
