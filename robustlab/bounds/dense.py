"""A feed-forward model rewritten as ``Flatten``, ``Linear`` and ``ReLU`` layers only.

Interval bounds and linear relaxations are easiest to learn (and to write) on fully connected
networks. :func:`as_dense` turns any model the bounds accept (``Normalize``, ``Conv2d``,
``Linear``, ``ReLU``, ``Flatten``) into an equivalent ``nn.Sequential(Flatten, Linear, ReLU, ...,
Linear)``: every convolution becomes the matrix it applies to the flattened image, and the
per-channel ``Normalize`` and the ``Flatten`` layers are folded into the next affine layer.
Only those are folded: each ``Linear`` of the result is one ``Conv2d`` or ``Linear`` of the
model, so interval bounds computed layer by layer are the same for both (folding two affine
layers into one would make them tighter).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._layers import Affine, Conv, Dense, ReLU, network

__all__ = ["as_dense"]


def _fold(ops: list[Affine]) -> nn.Linear:
    """One ``nn.Linear`` applying the affine ``ops`` in turn (flattened in and out)."""
    shape = ops[0].in_shape
    n_in = math.prod(shape)
    with torch.no_grad():
        basis = torch.eye(n_in, dtype=ops[0].dtype, device=ops[0].device).view(n_in, *shape)
        zero = torch.zeros(1, *shape, dtype=basis.dtype, device=basis.device)
        for op in ops:
            basis, zero = op.forward(basis), op.forward(zero)
        bias = zero.flatten()
        weight = (basis.flatten(1) - bias).T
    layer = nn.Linear(n_in, bias.numel(), dtype=basis.dtype, device=basis.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def as_dense(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> nn.Sequential:
    """The same function as ``model``, as ``nn.Sequential(Flatten(), Linear, ReLU, ..., Linear)``.

    Args:
        model: an ``nn.Sequential`` (nested ones allowed) of ``Normalize``, ``Linear``,
            ``Conv2d``, ``ReLU`` and ``Flatten`` layers, such as ``SmallCNN`` or ``MLP``; it is read,
            never changed.
        input_shape: one input's (C, H, W).

    Returns:
        a new model in eval mode, in the dtype and on the device of ``model``'s parameters, with
        one ``Linear`` per ``Conv2d``/``Linear`` of ``model`` (``Normalize`` and ``Flatten`` folded
        into the next one) and the same ReLUs. Its outputs equal ``model``'s up to rounding.

    Raises:
        ValueError: for an unsupported layer (named with its position), a shape mismatch or a
            model that does not end with an affine layer.
        TypeError: if ``model`` is not an ``nn.Sequential``.
    """
    if not isinstance(input_shape, tuple) or not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be a tuple of positive ints such as (1, 28, 28), got {input_shape!r}")
    parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    net = network(model, torch.zeros(1, *input_shape, dtype=dtype, device=device), who="as_dense")
    out: list[nn.Module] = [nn.Flatten()]
    pending: list[Affine] = []
    for op in net.ops:
        if isinstance(op, ReLU):
            if not any(isinstance(p, (Dense, Conv)) for p in pending):
                raise ValueError("as_dense needs a Linear or Conv2d layer before every ReLU")
            out += [_fold(pending), nn.ReLU()]
            pending = []
        elif isinstance(op, (Dense, Conv)) and any(isinstance(p, (Dense, Conv)) for p in pending):
            out.append(_fold(pending))  # one Linear per Conv2d/Linear: folding two would change the bounds
            pending = [op]
        else:
            pending.append(op)
    if not any(isinstance(p, (Dense, Conv)) for p in pending):
        raise ValueError("as_dense needs a model that ends with a Linear or Conv2d layer (the logits), then "
                         "at most Flatten")
    out.append(_fold(pending))
    return nn.Sequential(*out).eval()
