"""Saliency maps: gradient, gradient x input, SmoothGrad and Integrated Gradients.

Every method explains the *logit* of a target class (by default the predicted class) and
returns an attribution of the same shape as ``x``, (N, C, H, W). They share the attacks'
contract: the model runs in eval mode and is left exactly as found, ``x`` (and its ``.grad``)
is never touched, gradients are taken w.r.t. the input only, work is batched, and everything
follows the device and dtype of ``x``.

- ``gradient``: ``d logit_t / dx`` (Simonyan et al., 2014), optionally its absolute value.
- ``grad_x_input``: ``x * d logit_t / dx`` (Shrikumar et al., 2016).
- ``smoothgrad``: the gradient averaged over ``x + N(0, sigma^2)`` (Smilkov et al., 2017);
  ``squared=True`` averages squared gradients (SmoothGrad-Squared, Hooker et al., 2019).
- ``integrated_gradients``: ``(x - x') * integral_0^1 grad(x' + a (x - x')) da`` (Sundararajan
  et al., 2017), the integral by a Riemann or trapezoid rule over ``steps`` points.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_flag,
    check_generator,
    check_images,
    check_logits_shape,
    check_number,
    eval_mode,
)

__all__ = ["gradient", "loss_gradient", "grad_x_input", "smoothgrad", "integrated_gradients", "IGResult", "RULES",
           "METHODS", "attribute", "to_heatmap"]

RULES = ("trapezoid", "left", "right", "middle")


class IGResult(NamedTuple):
    """Integrated gradients with ``return_delta=True``.

    Attributes:
        attribution: (N, C, H, W).
        delta: (N,) completeness gap ``sum(attribution) - (f(x) - f(baseline))`` for the target
            logit f; it shrinks as ``steps`` grows (exactly 0 for a linear model).
    """

    attribution: Tensor
    delta: Tensor


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    return check_logits_shape(model(x), x.shape[0])


def _target(model: nn.Module, x: Tensor, target: object) -> Tensor:
    """The target classes: ``target`` checked against the model's outputs, or the prediction."""
    with torch.no_grad():
        logits = _logits(model, x)
    return logits.argmax(dim=1) if target is None else _check_target(target, x, logits.shape[1])


def _check_target(target: object, x: Tensor, k: int) -> Tensor:
    """Checks ``target`` (an int or an (N,) int64 tensor) against the model's ``k`` classes."""
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((x.shape[0],), target, dtype=torch.int64, device=x.device)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be None (the predicted class), an int or an (N,) int64 tensor, "
                        f"got {type(target).__name__}")
    if target.dtype != torch.int64 or target.shape != (x.shape[0],):
        raise ValueError(f"target must be an int64 tensor of shape ({x.shape[0]},), got dtype "
                         f"{target.dtype} and shape {tuple(target.shape)}")
    target = target.to(x.device)
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
        raise ValueError(f"target must hold classes in [0, {k - 1}] for this model with {k} outputs, "
                         f"got min={int(target.min())}, max={int(target.max())}")
    return target


def _check_batch_size(batch_size: object) -> None:
    check_number(batch_size, "batch_size", low=1, integer=True)


def _grad(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """d logit_target / dx for a batch (model already in eval mode); x is not modified."""
    x_in = x.detach().requires_grad_(True)
    logits = _logits(model, x_in)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x_in)
    return grad


def gradient(model: nn.Module, x: Tensor, target: Tensor | int | None = None, *,
             absolute: bool = False) -> Tensor:
    """The vanilla gradient saliency map ``d logit_target / dx`` (Simonyan et al., 2014).

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        target: class to explain per example, (N,) int64 or an int; default: the predicted class.
        absolute: return ``|gradient|``.

    Returns:
        (N, C, H, W) attribution.
    """
    x = check_images(x)
    check_flag(absolute, "absolute")
    with eval_mode(model):  # one forward: the prediction and the gradient come from the same pass
        x_in = x.detach().requires_grad_(True)
        logits = _logits(model, x_in)
        target = logits.argmax(dim=1) if target is None else _check_target(target, x, logits.shape[1])
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x_in)
    return grad.abs() if absolute else grad


def loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The gradient of the cross-entropy loss, ``d CE(model(x), y) / dx``, per example.

    What Tsipras et al. (2019, Fig. 2) and Etmann et al. (2019) plot: the direction that
    increases the loss fastest, i.e. the first step of an attack. It points *away* from the
    label's evidence, so its sign is the opposite of :func:`gradient`'s where one logit
    dominates.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.

    Returns:
        (N, C, H, W) gradient.
    """
    x = check_images(x)
    with eval_mode(model):
        x_in = x.detach().requires_grad_(True)
        logits = _logits(model, x_in)
        y = _check_target(y, x, logits.shape[1])
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_in)
    return grad


def grad_x_input(model: nn.Module, x: Tensor, target: Tensor | int | None = None) -> Tensor:
    """Gradient times input, ``x * d logit_target / dx`` (Shrikumar et al., 2016).

    For a linear logit ``w.x + b`` this is ``w * x``: each pixel's share of the logit.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        target: class to explain per example, (N,) int64 or an int; default: the predicted class.

    Returns:
        (N, C, H, W) attribution.
    """
    return gradient(model, x, target) * x.detach()


def smoothgrad(model: nn.Module, x: Tensor, target: Tensor | int | None = None, *, sigma: float = 0.15,
               samples: int = 50, squared: bool = False, batch_size: int = 1000,
               generator: torch.Generator | None = None) -> Tensor:
    """SmoothGrad: the gradient averaged over noisy copies of the input (Smilkov et al., 2017).

    ``mean_s grad(x + sigma * z_s)`` with ``z_s ~ N(0, I)`` and no clamping; the target class is
    fixed from the clean input. The noise of each example is drawn as one block, so an example
    gets the same noise alone or in a batch, whatever ``batch_size`` is (same generator).

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        target: class to explain per example, (N,) int64 or an int; default: the predicted class.
        sigma: noise standard deviation in pixel units, >= 0 (Smilkov et al. suggest 10-20 % of
            the input range; 0 gives the plain gradient).
        samples: noisy copies per example, >= 1.
        squared: average squared gradients instead (SmoothGrad-Squared).
        batch_size: noisy images per forward/backward pass.
        generator: source of the noise.

    Returns:
        (N, C, H, W) attribution.
    """
    x = check_images(x)
    check_number(sigma, "sigma", low=0.0)
    check_number(samples, "samples", low=1, integer=True)
    check_flag(squared, "squared")
    _check_batch_size(batch_size)
    check_generator(generator, x)
    x = x.detach()
    n = x.shape[0]
    total = torch.zeros_like(x)
    with eval_mode(model):
        target = _target(model, x, target)
        # Chunks of whole examples when several fit in a batch; else one example, several passes.
        per_chunk = max(1, batch_size // samples)
        for start in range(0, n, per_chunk):
            xs = x[start:start + per_chunk]  # (e, C, H, W)
            e = xs.shape[0]
            noisy = torch.empty((e, samples, *x.shape[1:]), dtype=x.dtype, device=x.device)
            for j in range(e):  # one block per example: batch-invariant noise
                noisy[j].normal_(0.0, 1.0, generator=generator)
            noisy.mul_(sigma).add_(xs[:, None])
            flat = noisy.view(e * samples, *x.shape[1:])
            tgt = target[start:start + e].repeat_interleave(samples)
            grads = torch.empty_like(flat)
            for b in range(0, e * samples, batch_size):
                grads[b:b + batch_size] = _grad(model, flat[b:b + batch_size], tgt[b:b + batch_size])
            if squared:
                grads.square_()
            total[start:start + e] = grads.view(e, samples, *x.shape[1:]).mean(dim=1)
    return total


def _weights(steps: int, rule: str, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Points in [0, 1] and quadrature weights (summing to 1) for the path integral."""
    if rule == "trapezoid":
        alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
    else:
        offset = {"left": 0.0, "right": 1.0, "middle": 0.5}[rule]
        alphas = (torch.arange(steps, dtype=torch.float64) + offset) / steps
        weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    return alphas.to(device, dtype), weights.to(device, dtype)


def integrated_gradients(model: nn.Module, x: Tensor, target: Tensor | int | None = None, *,
                         baseline: Tensor | float | None = None, steps: int = 50, rule: str = "trapezoid",
                         batch_size: int = 1000, return_delta: bool = False) -> Tensor | IGResult:
    """Integrated Gradients (Sundararajan et al., 2017).

    ``(x - x') * integral_0^1 d logit_t / dx (x' + a (x - x')) da``, with the integral computed
    by the ``rule`` over ``steps`` points: ``"trapezoid"`` (default) uses a = 0, 1/(steps-1), ...,
    1 with half weight at both ends; ``"left"``, ``"right"`` and ``"middle"`` are the Riemann sums
    over ``steps`` equal intervals. The attributions sum to ``f(x) - f(x')`` (completeness) up to
    the quadrature error, exactly for a linear model.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        target: class to explain per example, (N,) int64 or an int; default: the predicted class.
        baseline: the reference x', a tensor of x's shape, of one image's shape (C, H, W), or a
            number; default 0 (a black image).
        steps: gradient evaluations per example, >= 1 (>= 2 for the trapezoid rule).
        rule: ``"trapezoid"``, ``"left"``, ``"right"`` or ``"middle"``.
        batch_size: interpolated images per forward/backward pass.
        return_delta: also return the completeness gap per example.

    Returns:
        (N, C, H, W) attribution, or ``IGResult(attribution, delta)`` with ``return_delta``.
    """
    x = check_images(x)
    check_number(steps, "steps", low=1, integer=True)
    rule = check_choice(rule, "rule", RULES)
    if rule == "trapezoid" and steps < 2:
        raise ValueError(f"steps must be >= 2 for the trapezoid rule, got {steps}; "
                         f"use more steps or rule='middle'")
    _check_batch_size(batch_size)
    check_flag(return_delta, "return_delta")
    x = x.detach()
    base = _baseline(baseline, x)
    n = x.shape[0]
    alphas, weights = _weights(steps, rule, x.dtype, x.device)
    diff = x - base
    total = torch.zeros_like(x)
    with eval_mode(model):
        target = _target(model, x, target)
        # Points laid out step-major: rows [s*n, (s+1)*n) are step s for every example.
        per_chunk = max(1, batch_size // n) if n <= batch_size else 0
        if per_chunk:
            for s0 in range(0, steps, per_chunk):
                a = alphas[s0:s0 + per_chunk]  # (k,)
                k = a.shape[0]
                points = torch.addcmul(base[None], a.view(k, 1, 1, 1, 1), diff[None]).view(k * n, *x.shape[1:])
                grads = _grad(model, points, target.repeat(k)).view(k, n, *x.shape[1:])
                total += torch.tensordot(weights[s0:s0 + k], grads, dims=1)
        else:  # more examples than batch_size: one step at a time, examples in slices
            for s in range(steps):
                for b in range(0, n, batch_size):
                    sl = slice(b, b + batch_size)
                    point = torch.addcmul(base[sl], diff[sl], alphas[s])
                    total[sl] += weights[s] * _grad(model, point, target[sl])
        attribution = diff * total
        if not return_delta:
            return attribution
        with torch.no_grad():
            f_x = _logits(model, x).gather(1, target[:, None]).squeeze(1)
            f_b = _logits(model, base).gather(1, target[:, None]).squeeze(1)
    return IGResult(attribution, attribution.flatten(1).sum(dim=1) - (f_x - f_b))


def _baseline(baseline: object, x: Tensor) -> Tensor:
    """The baseline broadcast to x's shape, on x's device and dtype."""
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, Tensor):
        raise TypeError(f"baseline must be None, a number or a tensor, got {type(baseline).__name__}")
    if baseline.shape == x.shape[1:]:
        baseline = baseline.expand_as(x)
    if baseline.shape != x.shape:
        raise ValueError(f"baseline must have the shape of x {tuple(x.shape)} or of one image "
                         f"{tuple(x.shape[1:])}, got {tuple(baseline.shape)}")
    return baseline.detach().to(x.device, x.dtype)


METHODS = ("gradient", "grad_x_input", "smoothgrad", "integrated_gradients")
"""The names accepted by :func:`attribute`."""


def attribute(model: nn.Module, x: Tensor, target: Tensor | int | None = None, *, method: str,
              **kwargs) -> Tensor:
    """Any of the saliency methods by name (for menus and loops): ``method`` is one of
    ``METHODS`` and ``kwargs`` go to that function."""
    method = check_choice(method, "method", METHODS)
    functions = {"gradient": gradient, "grad_x_input": grad_x_input, "smoothgrad": smoothgrad,
                 "integrated_gradients": integrated_gradients}
    return functions[method](model, x, target, **kwargs)


def to_heatmap(attr: Tensor, *, reduce: str = "sum", absolute: bool = True,
               percentile: float = 99.0) -> Tensor:
    """Attributions prepared for display: one channel, robustly normalised per example.

    Channels are combined by ``reduce`` (``"sum"``, ``"abs_sum"``, ``"max_abs"`` or ``"l2"``),
    the absolute value is taken if ``absolute``, and each map is divided by the ``percentile``-th
    percentile of its absolute values and clipped, so that a few extreme pixels do not wash out
    the rest (as in Smilkov et al.'s visualisations).

    Args:
        attr: (N, C, H, W) attributions.
        reduce: channel reduction.
        absolute: map to [0, 1] (magnitude) instead of [-1, 1] (signed).
        percentile: in (0, 100]; 100 divides by the maximum.

    Returns:
        (N, H, W) in [0, 1] if ``absolute`` else in [-1, 1].
    """
    if not isinstance(attr, Tensor) or attr.dim() != 4:
        shape = tuple(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__
        raise ValueError(f"attr must be an (N, C, H, W) attribution tensor, got {shape}")
    reduce = check_choice(reduce, "reduce", ("sum", "abs_sum", "max_abs", "l2"))
    check_flag(absolute, "absolute")
    check_number(percentile, "percentile", low=0.0, strict=True)
    if percentile > 100:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    a = attr.detach().float()
    if reduce == "sum":
        m = a.sum(dim=1)
    elif reduce == "abs_sum":
        m = a.abs().sum(dim=1)
    elif reduce == "max_abs":
        m = a.abs().amax(dim=1)
    else:
        m = a.square().sum(dim=1).sqrt()
    if absolute:
        m = m.abs()
    scale = torch.quantile(m.abs().flatten(1), percentile / 100.0, dim=1).clamp_min(1e-12)  # (N,)
    m = m / scale.view(-1, 1, 1)
    return m.clamp(0.0 if absolute else -1.0, 1.0)
