"""Model-free controls for attribution maps.

A saliency map that ranks pixels no better than the image's own brightness, or than its edges,
has not shown that it explains the *model*: on MNIST the ink is where every digit's evidence
lies, so any map that follows the ink scores well on ink-sensitive metrics. Every attribution
benchmark of the course runs these beside the models' maps:

- ``random_attribution``: a random ranking (the floor);
- ``image_attribution``: the pixel intensity itself (no model at all);
- ``edge_attribution``: the Sobel gradient magnitude of the image (an edge detector, no model);

and, with :mod:`robustlab.interpret.sanity`, the same saliency method on a model whose weights
were randomised (Adebayo et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_generator, check_images

__all__ = ["random_attribution", "image_attribution", "edge_attribution", "CONTROLS", "control_attribution"]

CONTROLS = ("random", "image", "edge")
"""The names of the model-free controls, for :func:`control_attribution`."""


def random_attribution(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """A random ranking as an attribution (the baseline of ROAR and KAR), (N, C, H, W).

    One uniform score per pixel, the same in every channel.
    """
    x = check_images(x)
    check_generator(generator, x)
    score = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=x.device, dtype=x.dtype)
    return score.expand_as(x).clone()


def image_attribution(x: Tensor) -> Tensor:
    """The image itself as an attribution, (N, C, H, W): ranks pixels by brightness.

    A control, not an explanation: it knows nothing about any model. A metric under which it
    beats a model's saliency map measures where the ink is rather than what the model uses.
    """
    return check_images(x).detach().clone()


def edge_attribution(x: Tensor) -> Tensor:
    """The Sobel gradient magnitude of the image, (N, C, H, W), each channel on its own.

    ``sqrt(Gx^2 + Gy^2)`` with the 3x3 Sobel kernels and replicated borders: large on the
    strokes' edges, zero on flat regions. Adebayo et al. (2018) show that an edge detector
    already produces maps that look like many saliency methods' output; a saliency map must
    beat it to be called model-specific.
    """
    x = check_images(x).detach()
    n, c, h, w = x.shape
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    padded = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)  # (N*C, 2, H, W)
    return g.square().sum(dim=1).sqrt().reshape(n, c, h, w)


def control_attribution(name: str, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """The control ``name`` (one of :data:`CONTROLS`) for images ``x``, (N, C, H, W)."""
    if name == "random":
        return random_attribution(x, generator=generator)
    if name == "image":
        return image_attribution(x)
    if name == "edge":
        return edge_attribution(x)
    raise ValueError(f"unknown control {name!r}; valid values are {', '.join(map(repr, CONTROLS))}")
