"""The Square attack (Andriushchenko et al., 2020): a random search that needs only scores.

Square never looks at a gradient, so a model that hides or breaks its gradients (gradient
masking: quantised inputs, saturated softmax, non-differentiable layers) cannot stop it. Each
query changes a random square window of the current perturbation and keeps the change only if it
lowers the margin ``logits_y - max_{j != y} logits_j``; the window shrinks on a fixed schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_generator,
    check_images,
    check_labels,
    check_logits,
    check_number,
    eval_mode,
)
from ._geometry import NORMS, TINY
from ._loss import margin

__all__ = ["square", "window_fraction"]

# Share of the budget (out of 10,000) after which the window's area is halved once more.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(p_init: float, query: int, queries: int) -> float:
    """The share of the image a window covers at ``query`` of ``queries``: ``p_init`` halved at
    fixed fractions of the budget (Andriushchenko et al.'s schedule, rescaled to 10,000 queries)."""
    t = int(query / queries * 10_000)
    return p_init / 2 ** sum(t > h for h in _HALVINGS)


def _side(p: float, h: int, w: int, minimum: int) -> int:
    """Window side for a window covering about a share ``p`` of an h x w image."""
    upper = max(min(h, w) - 1, 1)
    return max(min(round((p * h * w) ** 0.5), upper), min(minimum, min(h, w)))


def _windows(n: int, side: int, h: int, w: int, device, generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random window corners, (N,) each, and the (N, 1, H, W) bool masks of the windows."""
    top = torch.randint(0, h - side + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, w - side + 1, (n,), generator=generator, device=device)
    r = torch.arange(h, device=device).view(1, 1, h, 1)
    c = torch.arange(w, device=device).view(1, 1, 1, w)
    t, lft = top.view(-1, 1, 1, 1), left.view(-1, 1, 1, 1)
    mask = (r >= t) & (r < t + side) & (c >= lft) & (c < lft + side)
    return top, left, mask


def _bump(side: int, device, dtype) -> Tensor:
    """A (side, side) pattern of unit L2 norm: two opposite lobes, each peaked at its centre.

    Each lobe is a sum of centred nested rectangles, the k-th (k = 0 innermost) weighted
    ``1 / (k + 1)**2``, so values fall off like a Gaussian; the two lobes (top and bottom
    halves) have opposite signs, so the pattern changes the image without a net shift.
    """
    def lobe(h: int, w: int) -> Tensor:
        i = torch.arange(h, device=device).view(-1, 1)
        j = torch.arange(w, device=device).view(1, -1)
        ring = torch.maximum((i - h // 2).abs(), (j - w // 2).abs())  # Chebyshev distance to the centre
        rings = max(h, w) // 2 + 1
        weights = 1.0 / torch.arange(1, rings + 1, device=device, dtype=dtype) ** 2
        tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
        v = tail[ring.clamp(max=rings - 1)]
        return v / v.norm()

    pattern = torch.cat([lobe(side // 2, side), -lobe(side - side // 2, side)], dim=0)
    return pattern / pattern.norm()


def _window_index(t: Tensor, top: Tensor, left: Tensor, side: int) -> tuple[Tensor, ...]:
    """Advanced indices that pick each example's (C, side, side) window of t (N, C, H, W)."""
    ar = torch.arange(side, device=t.device)
    rows = (top[:, None] + ar).view(-1, 1, side, 1)
    cols = (left[:, None] + ar).view(-1, 1, 1, side)
    n, c = t.shape[:2]
    return (torch.arange(n, device=t.device).view(-1, 1, 1, 1), torch.arange(c, device=t.device).view(1, -1, 1, 1),
            rows, cols)


def _gather(t: Tensor, top: Tensor, left: Tensor, side: int) -> Tensor:
    """The (N, C, side, side) windows of t (N, C, H, W) at per-example corners."""
    return t[_window_index(t, top, left, side)]


def _scatter(t: Tensor, top: Tensor, left: Tensor, values: Tensor) -> Tensor:
    """t with its per-example windows replaced by ``values`` (N, C, side, side); t is not changed."""
    out = t.clone()
    out[_window_index(t, top, left, values.shape[-1])] = values
    return out


def _signs(shape: tuple[int, ...], like: Tensor, generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype).mul_(2).sub_(1)


def _init_linf(x: Tensor, eps: float, generator) -> Tensor:
    # Vertical stripes of +-eps, one sign per (example, channel, column).
    n, c, _, w = x.shape
    return (x + eps * _signs((n, c, 1, w), x, generator)).clamp(0.0, 1.0)


def _init_l2(x: Tensor, eps: float, generator) -> Tensor:
    # A grid of bumps with random signs, rescaled to norm eps.
    n, c, h, w = x.shape
    side = max(h // 5, 2)
    bump = _bump(side, x.device, x.dtype)
    gh, gw = h // side, w // side
    signs = _signs((n, c, gh, gw), x, generator)
    grid = (signs[:, :, :, None, :, None] * bump[:, None, :]).reshape(n, c, gh * side, gw * side)
    delta = torch.zeros_like(x)
    delta[:, :, :gh * side, :gw * side] = grid
    delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(TINY)).view(-1, 1, 1, 1)
    return (x + delta).clamp(0.0, 1.0)


def _propose_linf(x: Tensor, x_best: Tensor, eps: float, p: float, generator) -> Tensor:
    n, c, h, w = x.shape
    side = _side(p, h, w, 1)
    _, _, mask = _windows(n, side, h, w, x.device, generator)
    corner = (x + eps * _signs((n, c, 1, 1), x, generator)).clamp(0.0, 1.0)
    return torch.where(mask, corner, x_best)


def _propose_l2(x: Tensor, x_best: Tensor, eps: float, p: float, generator) -> Tensor:
    n, c, h, w = x.shape
    side = _side(p, h, w, 3)
    side += side % 2 == 0 and side < min(h, w)  # odd, so each window has a centre pixel
    delta = x_best - x
    top1, left1, mask1 = _windows(n, side, h, w, x.device, generator)
    _, _, mask2 = _windows(n, side, h, w, x.device, generator)
    union = mask1 | mask2
    # The norm the two windows may use: what they hold now plus what the budget has left.
    spare = (eps ** 2 - delta.flatten(1).pow(2).sum(dim=1)).clamp_min(0.0).view(-1, 1) / c  # (N, 1)
    room = (delta * union).pow(2).sum(dim=(2, 3)) + spare  # (N, C)
    old = _gather(delta, top1, left1, side)  # (N, C, s, s)
    old = old / old.flatten(2).norm(dim=2).clamp_min(TINY)[..., None, None]
    bump = _bump(side, x.device, x.dtype)
    if bool(torch.randint(0, 2, (1,), generator=generator, device=x.device)):
        bump = bump.T
    new = old + _signs((n, c, 1, 1), x, generator) * bump
    new = new / new.flatten(2).norm(dim=2).clamp_min(TINY)[..., None, None] * room.sqrt()[..., None, None]
    delta = _scatter(delta * ~union, top1, left1, new)
    delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(TINY)).view(-1, 1, 1, 1)
    return (x + delta).clamp(0.0, 1.0)


def square(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
           queries: int = 5000, p_init: float = 0.8, generator: torch.Generator | None = None) -> Tensor:
    """Square attack (Andriushchenko et al., 2020): score-based random search, no gradients.

    Starts from vertical stripes of +-eps (Linf) or a grid of bumps of norm eps (L2); every
    query redraws one random square window per example (Linf: to a random corner of the box;
    L2: a new bump, moving norm from a second random window into it) and keeps the proposal if
    it lowers the margin ``logits_y - max_{j != y} logits_j``. An example stops being queried as
    soon as it is misclassified, so a broken example costs fewer queries. Results depend on the
    batch an example is attacked in (the draws are per batch), but the same batch and generator
    state give the same result.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits; only its outputs are used.
        x: clean images, (N, C, H, W), in [0, 1].
        y: true labels, (N,) int64.
        eps: radius of the threat model in pixel units.
        norm: ``"linf"`` or ``"l2"``.
        queries: model evaluations per example, >= 1 (5,000 in AutoAttack), the first one the
            starting point.
        p_init: share of the image the first windows cover, in (0, 1].
        generator: random source; the same state gives the same result.

    Returns:
        x_adv, same shape, dtype and device as x: ``||x_adv - x||_norm <= eps`` per example
        (up to float rounding), values in [0, 1].
    """
    norm = check_choice(norm, "norm", NORMS)
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_number(queries, "queries", low=1, integer=True)
    check_number(p_init, "p_init", low=0.0, strict=True)
    if p_init > 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
    check_generator(generator, x)
    x = x.detach()
    n = x.shape[0]
    if n == 0 or eps == 0:
        return x.clone()
    if min(x.shape[2:]) < 2:
        raise ValueError(f"square needs images of at least 2x2 pixels, got {tuple(x.shape[2:])}")
    propose = _propose_linf if norm == "linf" else _propose_l2
    with torch.no_grad(), eval_mode(model):
        logits = model(x)
        check_logits(logits, y, n)
        best_margin = margin(logits, y)
        x_best = x.clone()
        idx = (best_margin > 0).nonzero().squeeze(1)
        if idx.numel() == 0:
            return x_best
        start = (_init_linf if norm == "linf" else _init_l2)(x[idx], eps, generator)
        m = margin(model(start), y[idx])
        better = m < best_margin[idx]
        x_best[idx[better]] = start[better]
        best_margin[idx[better]] = m[better]
        for q in range(1, queries):
            idx = (best_margin > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            p = window_fraction(p_init, q, queries)
            cand = propose(x[idx], x_best[idx], eps, p, generator)
            m = margin(model(cand), y[idx])
            better = m < best_margin[idx]
            x_best[idx[better]] = cand[better]
            best_margin[idx[better]] = m[better]
    return x_best
