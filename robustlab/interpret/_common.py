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


def check_removed(removed: object, x: Tensor) -> Tensor:
    """A mask of removed pixels for images ``x``: a bool tensor (N, H, W) or (N, 1, H, W), returned
    as (N, 1, H, W); anything else is a ValueError naming ``removed``."""
    n, _, h, w = x.shape
    if not isinstance(removed, Tensor) or removed.dtype != torch.bool or tuple(removed.shape) not in (
            (n, h, w), (n, 1, h, w)):
        shape = tuple(removed.shape) if isinstance(removed, Tensor) else type(removed).__name__
        dtype = f" {removed.dtype}" if isinstance(removed, Tensor) else ""
        raise ValueError(f"removed must be a bool tensor of shape {(n, h, w)} or {(n, 1, h, w)}, got{dtype} {shape}")
    return removed.reshape(n, 1, h, w).to(x.device)


def top_pixels(attr: Tensor, fraction: float) -> Tensor:
    """The ``round(fraction * H * W)`` pixels that ``attr`` ranks highest, per example.

    Pixels are ranked by ``|attr|`` summed over channels; ties are broken by position (stable
    sort: the earlier pixel in row-major order ranks higher), so the result is deterministic. For
    maps with many equal scores (the image control's black background) this decides which of
    the tied pixels go first: MoRF takes them from the top left, LeRF from the bottom right.

    Returns:
        (N, 1, H, W) bool mask.
    """
    n, _, h, w = attr.shape
    k = round(fraction * h * w)
    scores = attr.detach().abs().sum(dim=1).flatten(1)  # (N, H*W)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, :k], True)
    return top.view(n, 1, h, w)
