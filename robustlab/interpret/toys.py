"""Toy problems with known answers: Kim et al.'s 2-D experiment (section 2.2) and the
robustness-accuracy trade-off of Tsipras et al. (2019) with its analytic accuracies."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.stats import norm as normal_dist
from torch import Tensor, nn

from .._checks import check_images, check_labels, check_number, eval_mode

__all__ = ["kim_2d_data", "toy_2d_data", "toy_mlp", "gradient_alignment_2d", "plot_toy_2d", "tsipras_data",
           "tsipras_accuracies"]


def toy_2d_data(n: int, *, offset: float = 0.2, spread: float = 0.07,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Two classes of 2-D points, each a mixture of two Gaussians, in an XOR layout in [0, 1]^2.

    Class 0 clusters sit at (0.5 - offset, 0.5 - offset) and (0.5 + offset, 0.5 + offset),
    class 1 at the other two corners; every cluster has standard deviation ``spread``. The
    points are clamped to [0, 1] and shaped (N, 1, 1, 2), so every attack and training method
    of robustlab applies to them unchanged.

    Args:
        n: number of points (classes and clusters alternate, so they are balanced).
        offset: distance of each cluster centre from (0.5, 0.5) along both axes.
        spread: standard deviation of every cluster.
        generator: random source.

    Returns:
        (x, y): (n, 1, 1, 2) points in [0, 1] and (n,) int64 labels.
    """
    check_number(n, "n", low=2, integer=True)
    check_number(offset, "offset", low=0.0)
    check_number(spread, "spread", low=0.0, strict=True)
    y = torch.arange(n) % 2
    cluster = (torch.arange(n) // 2) % 2
    lo, hi = 0.5 - offset, 0.5 + offset
    centres = torch.tensor([[[lo, lo], [hi, hi]], [[lo, hi], [hi, lo]]])  # (class, cluster, 2)
    x = centres[y, cluster] + spread * torch.randn(n, 2, generator=generator)
    return x.clamp(0.0, 1.0).view(n, 1, 1, 2), y


def kim_2d_data(n: int, *, centres: tuple[tuple[float, ...], tuple[float, ...]] = ((0.15, 0.35), (0.65, 0.85)),
                spread_along: float = 0.04, spread_across: float = 0.004,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Kim, Seo & Jeon's (2019, section 2.2) setting: data on a low-dimensional structure in the plane.

    Both classes lie along the horizontal line y = 0.5, each a mixture of Gaussians with centres
    at x = ``centres[class]`` (standard deviation ``spread_along`` along the line and only
    ``spread_across`` across it). The data say nothing about the vertical direction, so a
    standard classifier may tilt its boundary freely there; a robust one must keep its margin in
    every direction, which makes its boundary cross the line at a right angle and its gradient
    point along the data towards the other class (:func:`gradient_alignment_2d` near 1).

    Args:
        n: number of points (classes and clusters alternate, so they are balanced).
        centres: the x coordinates of each class's cluster centres (same count per class).
        spread_along, spread_across: standard deviations along and across the line.
        generator: random source.

    Returns:
        (x, y): (n, 1, 1, 2) points in [0, 1] and (n,) int64 labels.
    """
    check_number(n, "n", low=2, integer=True)
    check_number(spread_along, "spread_along", low=0.0)
    check_number(spread_across, "spread_across", low=0.0)
    c = torch.as_tensor(centres, dtype=torch.float32)
    if c.dim() != 2 or c.shape[0] != 2 or c.shape[1] < 1:
        raise ValueError(f"centres must be two equally long sequences of x coordinates, one per class, got {centres!r}")
    y = torch.arange(n) % 2
    cluster = (torch.arange(n) // 2) % c.shape[1]
    along = c[y, cluster] + spread_along * torch.randn(n, generator=generator)
    across = 0.5 + spread_across * torch.randn(n, generator=generator)
    return torch.stack([along, across], dim=1).clamp(0.0, 1.0).view(n, 1, 1, 2), y


def toy_mlp(hidden: int = 64, *, seed: int = 0) -> nn.Module:
    """A small MLP for the 2-D toy: (N, 1, 1, 2) -> (N, 2) logits, deterministic for a seed."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return nn.Sequential(nn.Flatten(), nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, 2))
    finally:
        torch.random.set_rng_state(state)


def gradient_alignment_2d(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Cosine between the loss gradient at each point and the direction to the nearest point of
    the other class: near 1 when the gradient points along the data towards the other class
    (Kim et al.'s picture of a robust model), near 0 when it is unrelated to the data.

    Args:
        model: a 2-D toy model.
        x: (N, 1, 1, 2) points; y: (N,) labels (both classes present).

    Returns:
        (N,) cosines.
    """
    x = check_images(x)
    y = check_labels(y, x)
    with eval_mode(model):
        x_in = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    p = x.detach().view(-1, 2)
    d = torch.cdist(p, p)  # (N, N)
    d[y[:, None] == y[None, :]] = float("inf")
    nearest = p[d.argmin(dim=1)] - p  # (N, 2)
    return F.cosine_similarity(grad.view(-1, 2), nearest, dim=1)


def plot_toy_2d(model: nn.Module, x: Tensor, y: Tensor, *, ax=None, grid: int = 200, arrows: int = 60,
                title: str | None = None):
    """Decision regions, data and normalised loss gradients of a 2-D toy model.

    Args:
        model: a 2-D toy model, (N, 1, 1, 2) -> (N, 2) logits.
        x: (N, 1, 1, 2) points; y: (N,) labels.
        ax: matplotlib Axes (default: a new figure).
        grid: resolution of the decision-region image.
        arrows: number of points that get a gradient arrow.
        title: axes title.

    Returns:
        the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    x = check_images(x)
    y = check_labels(y, x)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    axis = torch.linspace(0, 1, grid)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], dim=1).view(-1, 1, 1, 2)
    with torch.no_grad(), eval_mode(model):
        p1 = F.softmax(model(points), dim=1)[:, 1].view(grid, grid)
    ax.imshow(p1.numpy(), origin="lower", extent=(0, 1, 0, 1), cmap="coolwarm", vmin=0, vmax=1, alpha=0.35)
    ax.contour(gx.numpy(), gy.numpy(), p1.numpy(), levels=[0.5], colors="k", linewidths=1)
    p = x.view(-1, 2)
    ax.scatter(p[:, 0], p[:, 1], c=y.numpy(), cmap="coolwarm", s=6, edgecolors="none")
    idx = torch.linspace(0, x.shape[0] - 1, min(arrows, x.shape[0])).long()
    with eval_mode(model):
        xi = x[idx].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[idx], reduction="sum"), xi)
    g = F.normalize(g.view(-1, 2), dim=1)
    ax.quiver(p[idx, 0], p[idx, 1], g[:, 0], g[:, 1], angles="xy", scale=25, width=0.004, color="k")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


# --- Tsipras et al.'s trade-off toy -------------------------------------------------------------

def tsipras_data(n: int, *, d: int, p: float = 0.95, eta: float | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Tsipras et al.'s distribution: one robust feature and ``d`` weakly correlated ones.

    ``y`` is +1 or -1 with equal probability; ``x_1 = y`` with probability ``p`` (else ``-y``);
    ``x_2 .. x_{d+1} ~ N(eta * y, 1)``, with ``eta = 2 / sqrt(d)`` by default. (Feature vectors,
    not images: this toy is analysed in closed form by :func:`tsipras_accuracies`.)

    Returns:
        (x, y): (n, d + 1) features and (n,) labels in {-1, +1} (float).
    """
    check_number(n, "n", low=1, integer=True)
    check_number(d, "d", low=1, integer=True)
    check_number(p, "p", low=0.5)
    if p > 1:
        raise ValueError(f"p must lie in [0.5, 1], got {p}")
    eta = 2.0 / math.sqrt(d) if eta is None else eta
    y = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    flip = torch.rand(n, generator=generator, dtype=torch.float64) >= p
    x1 = torch.where(flip, -y, y)
    rest = eta * y[:, None] + torch.randn(n, d, generator=generator, dtype=torch.float64)
    return torch.cat([x1[:, None], rest], dim=1), y


def tsipras_accuracies(*, d: int, p: float = 0.95, eta: float | None = None,
                       eps: float | None = None) -> dict[str, float]:
    """Closed-form clean and Linf-robust accuracies of two classifiers on :func:`tsipras_data`.

    - "standard": ``sign(mean(x_2 .. x_{d+1}))``: clean accuracy ``Phi(eta sqrt(d))``; an Linf
      adversary with ``eps`` shifts every weak feature by ``-eps * y``, leaving
      ``Phi((eta - eps) sqrt(d))``.
    - "robust": ``sign(x_1)``: accuracy ``p``, unchanged for ``eps < 1``.

    With ``eps = 2 eta`` (the paper's choice) the standard classifier drops to
    ``Phi(-eta sqrt(d))``, below 1 - p once ``eta sqrt(d)`` is large: the trade-off.

    Returns:
        {"standard_clean", "standard_robust", "robust_clean", "robust_robust", "eps"}.
    """
    check_number(d, "d", low=1, integer=True)
    eta = 2.0 / math.sqrt(d) if eta is None else eta
    eps = 2.0 * eta if eps is None else eps
    root = math.sqrt(d)
    return {
        "standard_clean": float(normal_dist.cdf(eta * root)),
        "standard_robust": float(normal_dist.cdf((eta - eps) * root)),
        "robust_clean": float(p),
        "robust_robust": float(p) if eps < 1 else 0.0,
        "eps": float(eps),
    }
