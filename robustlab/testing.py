"""Tiny models with hand-derivable behaviour, for tests and for grading exercises.

``LinearBinary`` has logits ``(0, w.x + b)``: for label 1 the cross-entropy is
``softplus(-(w.x + b))``, whose input gradient is ``-sigmoid(-(w.x + b)) * w``, so the worst
Linf step is ``-eps * sign(w)`` and the worst L2 step is ``-eps * w / ||w||`` (signs flip for
label 0). ``Quadratic`` pushes the loss up away from a centre ``c``: PGD in Linf converges to
``clamp(x + eps * sign(x - c), 0, 1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LinearBinary", "Quadratic", "tiny_cnn"]


class LinearBinary(nn.Module):
    """Two-class linear model with logits ``(0, w.x + b)``.

    Args:
        w: weights, (C, H, W): the shape of one image.
        b: bias.
    """

    def __init__(self, w: Tensor, b: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(w.detach().clone())
        self.b = nn.Parameter(torch.tensor(float(b), dtype=w.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 2) logits."""
        f = x.flatten(1) @ self.w.flatten() + self.b  # (N,)
        return torch.stack([torch.zeros_like(f), f], dim=1)


class Quadratic(nn.Module):
    """Two-class model with logits ``(0, 0.5 * sum(a * (x - c)**2) - 1)``: for label 0 the loss
    grows as ``x`` moves away from ``c``, coordinate by coordinate.

    Args:
        c: centre, (C, H, W).
        a: positive curvature per coordinate, broadcastable to (C, H, W).
    """

    def __init__(self, c: Tensor, a: float | Tensor = 1.0):
        super().__init__()
        self.c = nn.Parameter(c.detach().clone())
        self.register_buffer("a", torch.as_tensor(a, dtype=c.dtype).expand_as(c).clone())

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 2) logits."""
        f = 0.5 * (self.a * (x - self.c) ** 2).flatten(1).sum(dim=1) - 1.0  # (N,)
        return torch.stack([torch.zeros_like(f), f], dim=1)


def tiny_cnn(in_channels: int = 1, num_classes: int = 10, *, size: int = 8, batchnorm: bool = True,
             dropout: float = 0.25, seed: int = 0) -> nn.Module:
    """A small CNN with BatchNorm and Dropout, deterministic for a seed.

    Its training-mode behaviour differs from eval mode (BatchNorm statistics, dropout), so it
    exposes attacks that forget ``model.eval()`` or touch the running statistics.

    Args:
        in_channels: image channels.
        num_classes: number of logits.
        size: image height and width.
        batchnorm: include a BatchNorm layer.
        dropout: dropout probability before the last layer.
        seed: seed for the initial weights.

    Returns:
        An ``nn.Module`` mapping (N, in_channels, size, size) to (N, num_classes).
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 8, 3, padding=1)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(8))
        layers += [nn.ReLU(), nn.Flatten(), nn.Dropout(dropout),
                   nn.Linear(8 * size * size, num_classes)]
        model = nn.Sequential(*layers)
        if batchnorm:
            # Non-trivial running statistics, so that eval and train mode really differ.
            layers[1].running_mean.uniform_(-0.5, 0.5)
            layers[1].running_var.uniform_(0.5, 2.0)
    finally:
        torch.random.set_rng_state(gen_state)
    return model
