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

__all__ = ["LinearBinary", "LinearMulti", "Quadratic", "QuantizedInput", "ThresholdRelu", "tiny_cnn", "model_state",
           "assert_same_state"]


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


class LinearMulti(nn.Module):
    """K-class linear model with logits ``W x + b``: every margin ``z_y - z_j`` is linear in x,
    so the smallest perturbation that changes its prediction has a closed form (the distance
    to the nearest of the hyperplanes ``(w_y - w_j).x + b_y - b_j = 0``, in the dual norm).

    Args:
        weight: (K, C, H, W): one weight image per class.
        bias: (K,).
    """

    def __init__(self, weight: Tensor, bias: Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, K) logits."""
        return x.flatten(1) @ self.weight.flatten(1).T + self.bias


class QuantizedInput(nn.Module):
    """Rounds its input to ``levels`` grey levels, then runs ``model``: a masked gradient.

    The rounding has a zero derivative almost everywhere, so every input gradient through it is
    exactly zero and gradient attacks cannot move, while the model can still be fooled (a
    score-based attack such as Square does it). The textbook case of gradient masking
    (Athalye et al., 2018); never a defence.
    """

    def __init__(self, model: nn.Module, levels: int = 4):
        super().__init__()
        self.model = model
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> the model's logits on the quantised images."""
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


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


def model_state(model: nn.Module) -> dict:
    """Everything a call could change on ``model``: parameters and buffers, ``.grad``,
    ``requires_grad`` and every module's training flag (copies, for :func:`assert_same_state`)."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    """Raises AssertionError naming the first difference between two :func:`model_state` records."""
    assert before["training"] == after["training"], "a module's training flag changed"
    assert before["requires_grad"] == after["requires_grad"], "requires_grad changed"
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"parameter or buffer {k} changed"
    for k, v in before["grad"].items():
        w = after["grad"][k]
        assert (v is None and w is None) or (v is not None and w is not None and torch.equal(v, w)), f"{k}.grad changed"


class ThresholdRelu(nn.Module):
    """Logits ``sum_i W[c, i] relu(x_i - t_i)``: its gradient is ``W[c, i]`` where ``x_i > t_i``,
    so its SmoothGrad is ``W[c, i] Phi((x_i - t_i) / sigma)`` in closed form (the graders compute
    that; the model itself only maps images to logits).

    Args:
        shape: the shape of one input, e.g. (1, 4, 4).
        classes: number of logits.
        seed: seeds ``W`` (standard normal) and ``t`` (uniform in [0.2, 0.8]).
    """

    def __init__(self, shape: tuple[int, ...], classes: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        size = 1
        for d in shape:
            size *= int(d)
        self.weight = nn.Parameter(torch.randn(classes, size, generator=g))
        self.register_buffer("t", torch.rand(size, generator=g) * 0.6 + 0.2)

    def forward(self, x: Tensor) -> Tensor:
        """(N, *shape) -> (N, classes) logits."""
        return torch.relu(x.flatten(1) - self.t) @ self.weight.T
