"""Numbers for "perceptually aligned" saliency: how much a map looks like the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_images, check_number
from ._common import check_attr as _check_attr

__all__ = ["alignment", "etmann_alignment", "mass_near_digit"]


def alignment(attr: Tensor, x: Tensor) -> Tensor:
    """How much a saliency map looks like the image: per-example Pearson correlation between
    ``|attr|`` (summed over channels) and the image intensity (mean over channels).

    On MNIST the digit is the bright strokes, so a map concentrated on the strokes scores near
    1 and a noise-like map near 0.

    Args:
        attr: attributions, (N, C, H, W).
        x: the images, (N, C, H, W), in [0, 1].

    Returns:
        (N,) correlations in [-1, 1] (0 for a constant map or image).
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    a = attr.detach().abs().sum(dim=1).flatten(1).double()
    b = x.detach().mean(dim=1).flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(dim=1) / den.clamp_min(1e-300), torch.zeros_like(den))


def etmann_alignment(attr: Tensor, x: Tensor) -> Tensor:
    """Etmann et al.'s (2019) alignment of a (gradient) map with the image, per example:
    ``|<x, attr>| / (||x||_2 ||attr||_2)``, the absolute cosine between them.

    Unlike :func:`alignment` it uses the signed map and no centring: it is the quantity Etmann
    et al. relate to the distance to the decision boundary (for a locally linear binary model,
    the logit at x is ``<x, grad> + b``, so a large alignment and a small bias mean x lies far
    from the boundary).

    Args:
        attr: attributions (e.g. input gradients), (N, C, H, W).
        x: the images, (N, C, H, W), in [0, 1].

    Returns:
        (N,) alignments in [0, 1] (0 for an all-zero map or image).
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    a = attr.detach().flatten(1).double()
    b = x.detach().flatten(1).double()
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(dim=1).abs() / den.clamp_min(1e-300), torch.zeros_like(den))


def mass_near_digit(attr: Tensor, x: Tensor, *, threshold: float = 0.5, radius: int = 2) -> Tensor:
    """The share of a saliency map's mass on or next to the digit, per example.

    The digit is the pixels brighter than ``threshold`` (any channel), grown by ``radius``
    pixels (a square dilation); the result is ``sum |attr| there / sum |attr|``. Unlike
    :func:`alignment` it does not penalise maps that light up the background right beside the
    strokes (where adding ink would change the class), which is what robust models do.

    Args:
        attr: attributions, (N, C, H, W).
        x: the images, (N, C, H, W), in [0, 1].
        threshold: brightness that counts as ink.
        radius: dilation in pixels, >= 0.

    Returns:
        (N,) shares in [0, 1] (0 for an all-zero map).
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    check_number(radius, "radius", low=0, integer=True)
    ink = (x.detach().amax(dim=1, keepdim=True) > threshold).to(x.dtype)
    near = F.max_pool2d(ink, 2 * radius + 1, stride=1, padding=radius) > 0 if radius else ink > 0  # (N, 1, H, W)
    mass = attr.detach().abs().sum(dim=1, keepdim=True).double()
    total = mass.flatten(1).sum(dim=1)
    inside = (mass * near).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total))
