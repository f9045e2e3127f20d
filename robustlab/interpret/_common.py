"""Checks and helpers shared by the attribution metrics."""

from __future__ import annotations

import torch
from torch import Tensor

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""The fractions of pixels removed (ROAR) or kept (KAR), as in Hooker et al. and Kim et al."""


def check_attr(attr: object, x: Tensor, name: str = "attr") -> Tensor:
    """``attr`` itself if it is a tensor of ``x``'s shape, else a ValueError naming ``name``."""
    if not isinstance(attr, Tensor) or attr.shape != x.shape:
        shape = tuple(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__
        raise ValueError(f"{name} must be an attribution of x's shape {tuple(x.shape)}, got {shape}")
    return attr


def top_pixels(attr: Tensor, fraction: float) -> Tensor:
    """The ``round(fraction * H * W)`` pixels that ``attr`` ranks highest, per example.

    Pixels are ranked by ``|attr|`` summed over channels; ties are broken by position (stable
    sort), so the result is deterministic.

    Returns:
        (N, 1, H, W) bool mask.
    """
    n, _, h, w = attr.shape
    k = round(fraction * h * w)
    scores = attr.detach().abs().sum(dim=1).flatten(1)  # (N, H*W)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, :k], True)
    return top.view(n, 1, h, w)
