"""Checks shared by the attribution metrics."""

from __future__ import annotations

from torch import Tensor


def check_attr(attr: object, x: Tensor, name: str = "attr") -> Tensor:
    """``attr`` itself if it is a tensor of ``x``'s shape, else a ValueError naming ``name``."""
    if not isinstance(attr, Tensor) or attr.shape != x.shape:
        shape = tuple(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__
        raise ValueError(f"{name} must be an attribution of x's shape {tuple(x.shape)}, got {shape}")
    return attr
