"""Gradient attacks in the Linf and L2 threat models: FGSM, FGM and PGD, and robust accuracy.

All attacks share one contract (see CONVENTIONS.md): images ``x`` are (N, C, H, W) in [0, 1],
``eps`` is in pixel units, the result stays in the eps-ball around ``x`` and in [0, 1], the model
is run in eval mode and left exactly as found (parameters, buffers, ``.grad``, ``requires_grad``,
training flags), ``x`` is never modified, and gradients are taken w.r.t. the input only.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_flag,
    check_generator,
    check_images,
    check_labels,
    check_logits,
    check_number,
    eval_mode,
)

__all__ = ["fgsm", "fgm", "pgd", "robust_accuracy", "RobustAccuracy", "NORMS", "LOSSES"]

NORMS = ("linf", "l2")
LOSSES = ("ce", "cw")

# Below this, a gradient or perturbation norm counts as zero (it avoids 0/0 in the L2 geometry).
_TINY = 1e-12

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def per_example_loss(logits: Tensor, y: Tensor, loss: str = "ce") -> Tensor:
    """The attack objective for each example, (N,).

    ``"ce"`` is the cross-entropy; ``"cw"`` is Carlini & Wagner's margin
    ``max_{j != y} logits_j - logits_y`` without the confidence clamp (as used with PGD by
    Madry et al.), positive exactly when the example is misclassified.

    Args:
        logits: (N, K) unnormalised scores.
        y: (N,) int64 labels.
        loss: ``"ce"`` or ``"cw"``.

    Returns:
        (N,) loss per example, higher means more adversarial for an untargeted attack.
    """
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true


def _step(x: Tensor, x_adv: Tensor, grad: Tensor, step: float, eps: float, norm: str,
          box: tuple[Tensor, Tensor] | None) -> Tensor:
    """One ascent step of size ``step`` (negative to descend), then projection and clamp.

    For Linf, projecting onto the eps-box and clamping to [0, 1] is one clamp to the
    precomputed ``box = (max(x - eps, 0), min(x + eps, 1))``. ``grad`` is consumed (it is
    overwritten); ``x`` and ``x_adv`` are not.
    """
    if norm == "linf":
        lo, hi = box
        return torch.add(x_adv, grad.sign_(), alpha=step).clamp_(lo, hi)
    g_norm = grad.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
    delta = torch.addcdiv(x_adv, grad, g_norm, value=step).sub_(x)
    d_norm = delta.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)
    return torch.addcmul(x, delta, (eps / d_norm).clamp_(max=1.0)).clamp_(0.0, 1.0)


def _random_starts(x: Tensor, eps: float, norm: str, restarts: int,
                   generator: torch.Generator | None) -> Tensor:
    """Uniform random starts in the eps-ball, (N, restarts, C*H*W).

    All randomness comes from one ``torch.rand`` call laid out example-major, so on the CPU an
    example gets the same starts whether it is attacked alone or in a batch (same generator).
    The L2 ball is sampled exactly: a Gaussian direction (by the inverse normal CDF of uniforms)
    times a radius ``eps * u**(1/d)``.
    """
    n, d = x.shape[0], x[0].numel()
    extra = 0 if norm == "linf" else 1
    u = torch.rand(n, restarts, d + extra, generator=generator, device=x.device, dtype=x.dtype)
    if norm == "linf":
        return u.mul_(2.0 * eps).sub_(eps)
    # rand may return exactly 0, whose normal quantile is -inf.
    gauss = torch.special.ndtri(u[..., :d].clamp_min(torch.finfo(x.dtype).eps / 2))
    direction = gauss / gauss.norm(dim=-1, keepdim=True)
    radius = eps * u[..., d:] ** (1.0 / d)
    return direction * radius


def _attack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
            norm: str, random_start: bool, restarts: int, targeted: bool, loss: str,
            generator: torch.Generator | None) -> Tensor:
    """PGD on checked arguments; FGSM and FGM are its one-step, no-random-start cases."""
    x = x.detach()
    if x.shape[0] == 0:
        return x.clone()
    step = -alpha if targeted else alpha
    starts = _random_starts(x, eps, norm, restarts, generator) if random_start and eps > 0 else None
    box = ((x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)) if norm == "linf" else None
    checked = False
    best_x, best_obj = x, None
    with eval_mode(model):
        for r in range(restarts):
            x_adv = x if starts is None else (x + starts[:, r].view_as(x)).clamp(0.0, 1.0)
            for _ in range(steps):
                x_in = x_adv.detach().requires_grad_(True)
                logits = model(x_in)
                if not checked:
                    check_logits(logits, y, x.shape[0], stacklevel=4)
                    checked = True
                (grad,) = torch.autograd.grad(per_example_loss(logits, y, loss).sum(), x_in)
                x_adv = _step(x, x_in.detach(), grad, step, eps, norm, box)
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


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
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
        alpha: step size in the same units, e.g. 0.01 (Linf) or 0.1 (L2); > 0.
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
    check_number(alpha, "alpha", low=0.0, strict=True)
    check_number(steps, "steps", low=0, integer=True)
    check_number(restarts, "restarts", low=1, integer=True)
    check_flag(random_start, "random_start")
    check_flag(targeted, "targeted")
    check_generator(generator, x)
    return _attack(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm,
                   random_start=random_start, restarts=restarts, targeted=targeted, loss=loss,
                   generator=generator)


class RobustAccuracy(NamedTuple):
    """Result of :func:`robust_accuracy`.

    Attributes:
        accuracy: fraction of examples classified correctly and not fooled by any attack.
        clean_accuracy: fraction classified correctly without attack.
        robust: (N,) bool, True where the example withstood every attack.
        broken_by: (N,) int64: -1 robust, 0 misclassified clean, i >= 1 the i-th attack (in
            ``names`` order) was the first to succeed.
        names: the attacks' names, in the order they were run.
    """

    accuracy: float
    clean_accuracy: float
    robust: Tensor
    broken_by: Tensor
    names: tuple[str, ...]


def _attack_name(fn: Callable) -> str:
    if isinstance(fn, functools.partial):
        args = ", ".join(f"{k}={v}" for k, v in fn.keywords.items() if k != "generator")
        return f"{_attack_name(fn.func)}({args})"
    return getattr(fn, "__name__", type(fn).__name__)


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor,
                    attacks: Sequence[Attack] | Mapping[str, Attack], *,
                    batch_size: int = 256) -> RobustAccuracy:
    """Accuracy under the per-example worst case over several attacks.

    An example counts as robust only if it is classified correctly and every attack fails on
    it. Attacks run in order on the examples that are still robust, so later (stronger, slower)
    attacks only see what earlier ones could not break. The model runs in eval mode and every
    module's training flag is restored afterwards.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        attacks: callables ``attack(model, x, y) -> x_adv``, e.g.
            ``functools.partial(pgd, eps=0.3, alpha=0.01, steps=40)``; a dict gives them names.
        batch_size: examples per batch; bounds the memory use.

    Returns:
        A :class:`RobustAccuracy` with the accuracy and the per-example result.
    """
    check_images(x)
    check_labels(y, x)
    check_number(batch_size, "batch_size", low=1, integer=True)
    if isinstance(attacks, Mapping):
        names, fns = tuple(str(k) for k in attacks), list(attacks.values())
    elif isinstance(attacks, Sequence) and not isinstance(attacks, str):
        fns = list(attacks)
        names = tuple(_attack_name(fn) for fn in fns)
    else:
        raise TypeError(
            f"attacks must be a list or dict of callables attack(model, x, y) -> x_adv, got "
            f"{type(attacks).__name__}; wrap one attack as [functools.partial(pgd, eps=...)]"
        )
    for name, fn in zip(names, fns):
        if not callable(fn):
            raise TypeError(f"attack {name!r} is not callable: {fn!r}")

    n = x.shape[0]
    broken_by = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    with eval_mode(model):
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with torch.no_grad():
                logits = model(xb)
            if start == 0:
                check_logits(logits, yb, xb.shape[0])
            status = torch.where(logits.argmax(dim=1) == yb, -1, 0)  # (B,)
            for i, (name, fn) in enumerate(zip(names, fns), start=1):
                idx = (status == -1).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                x_adv = fn(model, xb[idx], yb[idx])
                if not isinstance(x_adv, Tensor) or x_adv.shape != xb[idx].shape:
                    got = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
                    raise ValueError(
                        f"attack {name!r} must return x_adv of shape {tuple(xb[idx].shape)}, got {got}"
                    )
                check_images(x_adv, name=f"x_adv returned by attack {name!r}")
                with torch.no_grad():
                    fooled = model(x_adv).argmax(dim=1) != yb[idx]
                status[idx[fooled]] = i
            broken_by[start:start + batch_size] = status
    robust = broken_by == -1
    return RobustAccuracy(
        accuracy=float(robust.float().mean()) if n else float("nan"),
        clean_accuracy=float((broken_by != 0).float().mean()) if n else float("nan"),
        robust=robust,
        broken_by=broken_by,
        names=names,
    )
