"""Interval bound propagation (IBP; Gowal et al., 2018).

Every layer's output is enclosed in a box, carried as a centre ``mid`` and a half-width ``rad``:
an affine layer maps them to ``W mid + b`` and ``|W| rad`` (the layer's own functional op with
``|W|``: two passes, each the cost of a forward pass), a ReLU clips the box's ends.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_flag
from ._domain import InputSet, box_lower
from ._layers import Affine, Network, check_arguments, network

__all__ = ["Bounds", "interval_bounds"]


class Bounds(NamedTuple):
    """Elementwise bounds: ``lower <= f(x') <= upper`` for every ``x'`` in the threat model."""

    lower: Tensor
    upper: Tensor


def boxes(net: Network, inputs: InputSet) -> list[tuple[Tensor, Tensor]]:
    """``(mid, rad)`` of the box around every layer's output, (N, *out_shape) each.

    For L2 the layers up to and including the first affine layer that is not a per-coordinate
    scale (the first Linear or Conv2d, with Normalize and Flatten before it) are bounded exactly
    over the ball, ``W x + b +- eps * ||row of W||_2``, and that box is intersected with the one
    from the ball's bounding box in [0, 1]; later layers use intervals.
    """
    mid, rad = inputs.mid, inputs.rad
    exact_l2 = inputs.norm == "l2"
    centre, scale = inputs.x, torch.ones_like(inputs.x[:1])  # scale: |row| of a diagonal map, (1, *shape)
    out = []
    for op in net.ops:
        if isinstance(op, Affine):
            mid, rad = op.forward(mid), op.forward_abs(rad)
            if exact_l2:
                centre = op.forward(centre)
                if op.diagonal:
                    scale = op.forward_abs(scale)
                    radius = inputs.eps * scale
                else:
                    radius = inputs.eps * op.forward_sq(scale ** 2).sqrt()
                    exact_l2 = False
                lower = torch.maximum(mid - rad, centre - radius)
                upper = torch.minimum(mid + rad, centre + radius)
                mid, rad = (lower + upper) / 2, ((upper - lower) / 2).clamp_min(0.0)
        else:  # ReLU; in place on fresh tensors only (fewer large allocations: page faults on the CPU)
            upper = torch.add(mid, rad).clamp_min_(0.0)
            lower = torch.sub(mid, rad).clamp_min_(0.0)
            rad = torch.sub(upper, lower).mul_(0.5)
            mid = lower.add_(upper).mul_(0.5)
            exact_l2 = False
        out.append((mid, rad))
    return out


def spec_lower(net: Network, inputs: InputSet, spec: Tensor, box_list: list[tuple[Tensor, Tensor]] | None = None
               ) -> Tensor:
    """IBP lower bounds of ``spec @ logits`` with the specification folded into the layers
    after the last ReLU (``W' = C W``, ``b' = C b``): the box of the last ReLU's output meets
    one linear function per row of C instead of K separate intervals.

    Args:
        spec: (N, M, K) or (1, M, K).

    Returns:
        (N, M) lower bounds.
    """
    last = net.relus[-1] if net.relus else -1
    a, bias = spec, spec.new_zeros(spec.shape[:2])
    for op in reversed(net.ops[last + 1:]):
        bias = bias + op.bias_term(a)
        a = op.backward(a)
    if last < 0:
        return inputs.lower_bound(a, bias)
    if box_list is None:
        box_list = boxes(Network(net.ops[:last + 1], net.relus), inputs)
    mid, rad = box_list[last]
    return box_lower(a, bias, mid, rad)


def interval_bounds(model: nn.Module, x: Tensor, *, eps: float, norm: str = "linf",
                    per_layer: bool = False) -> Bounds | list[Bounds]:
    """Interval bound propagation (Gowal et al., 2018): elementwise bounds of the logits over
    the eps-ball around x intersected with [0, 1].

    The input box is ``[clamp(x - eps, 0, 1), clamp(x + eps, 0, 1)]`` for Linf; each affine layer
    maps the box's centre and half-width exactly (``W mid + b``, ``|W| rad``), each ReLU clips it.
    For L2 the first affine layer (with the Normalize and Flatten before it) is bounded exactly
    over the ball, centre +- eps times the L2 norm of each row of its weight (the dual norm); this
    ignores the [0, 1] clamp, so the result is intersected with the interval from the ball's
    bounding box in [0, 1]. Later layers use intervals. The model must be an ``nn.Sequential``
    (nested ones allowed) of ``Normalize``, ``Linear``, ``Conv2d``, ``ReLU`` and ``Flatten``
    layers; it is never run or changed. The computation is batched and in the dtype and on the
    device of x.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        eps: radius of the threat model in pixel units, >= 0.
        norm: ``"linf"`` or ``"l2"``.
        per_layer: also bound every layer's output.

    Returns:
        ``Bounds(lower, upper)``, each (N, K): ``lower <= model(x') <= upper`` for every x' with
        ``||x' - x||_norm <= eps`` in [0, 1]. With ``per_layer=True`` a list with one ``Bounds``
        per layer, in the order of :func:`robustlab.bounds.layers` (nested ``nn.Sequential``
        unrolled), each ``(N, *out_shape)`` for that layer; the last entry bounds the logits.

    Raises:
        ValueError: for an unsupported layer (named with its position), eps < 0, an unknown
            norm or x outside [0, 1].
    """
    norm = check_arguments(x, eps, norm)
    check_flag(per_layer, "per_layer")
    with torch.no_grad():
        x = x.detach()
        net = network(model, x, who="interval_bounds")
        box_list = boxes(net, InputSet(x, eps, norm))
        out = [Bounds(mid - rad, mid + rad) for mid, rad in (box_list if per_layer else box_list[-1:])]
    return out if per_layer else out[-1]
