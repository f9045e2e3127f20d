"""A feed-forward model as a list of the operations the bounds understand.

Every verifier in this package reads a model through :func:`network`: it unrolls (possibly
nested) ``nn.Sequential`` containers into a flat list of layers, checks that each one is a
``Normalize``, ``Linear``, ``Conv2d``, ``ReLU`` or ``Flatten``, traces the shape each layer sees
and returns one small operation object per layer. The objects hold detached copies of the
weights in the dtype and on the device of the input, so bounding never touches the model (or,
with ``live=True`` for certified training, the weights themselves, so that a bound can be
back-propagated to them).

An affine operation ``W t + b`` offers the few maps that interval and linear bounds need, all
through the layer's own functional op (no dense matrix): ``forward`` (``W t + b``),
``forward_abs`` (``|W| t``), ``forward_sq`` (``W**2 t``), ``backward`` (``A W`` for a batch of
row vectors ``A``; ``conv_transpose2d`` for a convolution) and ``bias_term`` (``A b``). The MILP
needs explicit matrices: ``dense`` builds one by pushing an identity basis through ``forward``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_images, check_number
from ..models import Normalize

__all__ = ["Op", "Affine", "Scale", "Dense", "Conv", "Reshape", "ReLU", "Network", "network", "layers",
           "check_arguments", "NORMS", "SUPPORTED"]

NORMS = ("linf", "l2")
SUPPORTED = "Normalize, Linear, Conv2d, ReLU, Flatten"


class Op:
    """One layer: maps a batch (N, *in_shape) to (N, *out_shape)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def forward(self, t: Tensor) -> Tensor:
        raise NotImplementedError


class Affine(Op):
    """An affine layer ``t -> W t + b``.

    ``diagonal`` is True when ``W`` maps each coordinate to one coordinate (a per-channel scale
    or a reshape): interval arithmetic through it is exact.
    """

    diagonal = False

    def forward_abs(self, t: Tensor) -> Tensor:
        """``|W| t`` (no bias), (N, *in_shape) -> (N, *out_shape)."""
        raise NotImplementedError

    def forward_sq(self, t: Tensor) -> Tensor:
        """``W**2 t`` (no bias), (N, *in_shape) -> (N, *out_shape): squared row norms of W when t = 1."""
        raise NotImplementedError

    def backward(self, a: Tensor) -> Tensor:
        """``A W`` for rows ``A``: (B, M, *out_shape) -> (B, M, *in_shape)."""
        raise NotImplementedError

    def bias_term(self, a: Tensor) -> Tensor:
        """``A b``: (B, M, *out_shape) -> (B, M)."""
        raise NotImplementedError

    def dense(self) -> tuple[Tensor, Tensor]:
        """``(W, b)`` as an (out, in) matrix and an (out,) vector over flattened shapes."""
        n_in = math.prod(self.in_shape)
        basis = torch.eye(n_in, dtype=self.dtype, device=self.device).view(n_in, *self.in_shape)
        bias = self.forward(torch.zeros(1, *self.in_shape, dtype=self.dtype, device=self.device)).flatten()
        weight = (self.forward(basis).flatten(1) - bias).T  # (out, in)
        return weight.contiguous(), bias


def _tensor(t: Tensor, dtype: torch.dtype, device: torch.device, live: bool) -> Tensor:
    """A layer's weight in the input's dtype and device: detached, or (``live``) still in the autograd graph."""
    return t.to(device=device, dtype=dtype) if live else t.detach().to(device=device, dtype=dtype)


class Scale(Affine):
    """``Normalize``: ``(t - mean) / std`` per channel, i.e. ``W = diag(1 / std)``."""

    diagonal = True

    def __init__(self, layer: Normalize, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                 live: bool = False):
        self.in_shape = self.out_shape = shape
        self.dtype, self.device = dtype, device
        std = _tensor(layer.std, dtype, device, live)
        mean = _tensor(layer.mean, dtype, device, live)
        self.scale = (1.0 / std).view(-1, 1, 1)  # (C, 1, 1)
        self.shift = (-mean / std).view(-1, 1, 1)

    def forward(self, t: Tensor) -> Tensor:
        return t * self.scale + self.shift

    def forward_abs(self, t: Tensor) -> Tensor:
        return t * self.scale.abs()

    def forward_sq(self, t: Tensor) -> Tensor:
        return t * self.scale ** 2

    def backward(self, a: Tensor) -> Tensor:
        return a * self.scale

    def bias_term(self, a: Tensor) -> Tensor:
        return (a * self.shift).flatten(2).sum(-1)


class Reshape(Affine):
    """``Flatten``: the identity on the values, only the shape changes."""

    diagonal = True

    def __init__(self, in_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        self.in_shape, self.out_shape = in_shape, (math.prod(in_shape),)
        self.dtype, self.device = dtype, device

    def forward(self, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], *self.out_shape)

    forward_abs = forward_sq = forward

    def backward(self, a: Tensor) -> Tensor:
        return a.reshape(*a.shape[:2], *self.in_shape)

    def bias_term(self, a: Tensor) -> Tensor:
        return a.new_zeros(a.shape[:2])


class Dense(Affine):
    """``nn.Linear`` on flat features."""

    def __init__(self, layer: nn.Linear, dtype: torch.dtype, device: torch.device, live: bool = False):
        self.in_shape, self.out_shape = (layer.in_features,), (layer.out_features,)
        self.dtype, self.device = dtype, device
        self.weight = _tensor(layer.weight, dtype, device, live)
        self.bias = None if layer.bias is None else _tensor(layer.bias, dtype, device, live)

    def forward(self, t: Tensor) -> Tensor:
        return F.linear(t, self.weight, self.bias)

    def forward_abs(self, t: Tensor) -> Tensor:
        return F.linear(t, self.weight.abs())

    def forward_sq(self, t: Tensor) -> Tensor:
        return F.linear(t, self.weight ** 2)

    def backward(self, a: Tensor) -> Tensor:
        return a @ self.weight

    def bias_term(self, a: Tensor) -> Tensor:
        return a.new_zeros(a.shape[:2]) if self.bias is None else a @ self.bias

    def dense(self) -> tuple[Tensor, Tensor]:
        bias = torch.zeros(self.out_shape[0], dtype=self.dtype, device=self.device) if self.bias is None else self.bias
        return self.weight, bias


class Conv(Affine):
    """``nn.Conv2d`` with zero padding, any stride, no dilation, one group.

    ``backward`` is the transposed convolution, with the output padding that restores the
    input's exact height and width (a strided convolution drops up to ``stride - 1`` rows).
    """

    def __init__(self, layer: nn.Conv2d, in_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                 live: bool = False):
        self.weight = _tensor(layer.weight, dtype, device, live)
        self.bias = None if layer.bias is None else _tensor(layer.bias, dtype, device, live)
        self.stride, self.padding = tuple(layer.stride), tuple(layer.padding)
        self.dtype, self.device = dtype, device
        c, h, w = in_shape
        kh, kw = self.weight.shape[2:]
        h_out = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        w_out = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        self.in_shape, self.out_shape = in_shape, (self.weight.shape[0], h_out, w_out)
        self.output_padding = (h - ((h_out - 1) * self.stride[0] - 2 * self.padding[0] + kh),
                               w - ((w_out - 1) * self.stride[1] - 2 * self.padding[1] + kw))

    def _conv(self, t: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.conv2d(t, weight, bias, stride=self.stride, padding=self.padding)

    def forward(self, t: Tensor) -> Tensor:
        return self._conv(t, self.weight, self.bias)

    def forward_abs(self, t: Tensor) -> Tensor:
        return self._conv(t, self.weight.abs())

    def forward_sq(self, t: Tensor) -> Tensor:
        return self._conv(t, self.weight ** 2)

    def backward(self, a: Tensor) -> Tensor:
        b, m = a.shape[:2]
        out = F.conv_transpose2d(a.reshape(b * m, *self.out_shape), self.weight, stride=self.stride,
                                 padding=self.padding, output_padding=self.output_padding)
        return out.view(b, m, *self.in_shape)

    def bias_term(self, a: Tensor) -> Tensor:
        if self.bias is None:
            return a.new_zeros(a.shape[:2])
        return a.sum(dim=(-2, -1)) @ self.bias  # (B, M, C) @ (C,)


class ReLU(Op):
    """``nn.ReLU``."""

    def __init__(self, shape: tuple[int, ...]):
        self.in_shape = self.out_shape = shape

    def forward(self, t: Tensor) -> Tensor:
        return t.clamp_min(0)


class Network(NamedTuple):
    """A model as operations: ``ops[i]`` is the i-th layer of :func:`layers`; ``relus`` are the
    positions of the ReLU operations, in order."""

    ops: list[Op]
    relus: list[int]

    def forward(self, x: Tensor) -> Tensor:
        """The model's output, computed by the operations (same values as the model's forward)."""
        for op in self.ops:
            x = op.forward(x)
        return x


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of a (possibly nested) ``nn.Sequential`` in the order they run.

    The per-layer interval bounds of :func:`robustlab.bounds.interval_bounds` follow this order.

    Args:
        model: an ``nn.Sequential``; nested ``nn.Sequential`` containers (with the standard
            forward) are unrolled, any other module is one layer.

    Returns:
        ``(name, module)`` pairs, the names dotted as in ``model.named_modules()`` (``"3.0"``).
    """
    out: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential) and type(child).forward is nn.Sequential.forward:
                visit(child, full + ".")
            else:
                out.append((full, child))

    visit(model, "")
    return out


def _unsupported(name: str, module: nn.Module, who: str, why: str = "") -> ValueError:
    return ValueError(f"{type(module).__name__} at position {name} is not supported by {who}{why}; "
                      f"supported: {SUPPORTED} (in a possibly nested nn.Sequential); bound a model built from "
                      f"these layers, such as robustlab.models.SmallCNN or MLP")


def network(model: nn.Module, x: Tensor, *, who: str, live: bool = False) -> Network:
    """Reads ``model`` as operations on inputs shaped like ``x[0]``, in the dtype and on the
    device of ``x``; with ``live``, the operations use the model's weights in the autograd graph
    (for certified training) instead of detached copies.

    Raises:
        ValueError: naming the first unsupported layer and its position, or a shape mismatch.
        TypeError: if ``model`` is not an ``nn.Sequential`` with the standard forward.
    """
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        raise TypeError(f"{who} needs an nn.Sequential (such as robustlab.models.SmallCNN or MLP) of "
                        f"{SUPPORTED} layers, got {type(model).__name__}; rewrite the model as an nn.Sequential")
    ops: list[Op] = []
    relus: list[int] = []
    shape = tuple(x.shape[1:])
    dtype, device = x.dtype, x.device
    for name, m in layers(model):
        if isinstance(m, Normalize):
            if len(shape) != 3 or m.mean.numel() != shape[0]:
                raise ValueError(f"Normalize at position {name} has {m.mean.numel()} channels but receives shape "
                                 f"{shape}; it must see (C, H, W) images with matching channels")
            ops.append(Scale(m, shape, dtype, device, live))
        elif type(m) is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                raise _unsupported(name, m, who, f" with start_dim={m.start_dim}, end_dim={m.end_dim}"
                                   " (only the default nn.Flatten() is)")
            ops.append(Reshape(shape, dtype, device))
        elif type(m) is nn.Linear:
            if len(shape) != 1 or shape[0] != m.in_features:
                raise ValueError(f"Linear at position {name} expects {m.in_features} flat features but receives "
                                 f"shape {shape}; put an nn.Flatten() before it")
            ops.append(Dense(m, dtype, device, live))
        elif type(m) is nn.Conv2d:
            if tuple(m.dilation) != (1, 1) or m.groups != 1 or m.padding_mode != "zeros" \
                    or isinstance(m.padding, str):
                raise _unsupported(name, m, who, f" with dilation={m.dilation}, groups={m.groups}, "
                                   f"padding={m.padding!r}, padding_mode={m.padding_mode!r} (only integer zero "
                                   "padding, dilation 1 and groups 1 are)")
            if len(shape) != 3 or shape[0] != m.in_channels:
                raise ValueError(f"Conv2d at position {name} expects {m.in_channels} input channels but receives "
                                 f"shape {shape}; check the layer order")
            ops.append(Conv(m, shape, dtype, device, live))
        elif type(m) is nn.ReLU:
            relus.append(len(ops))
            ops.append(ReLU(shape))
        else:
            raise _unsupported(name, m, who)
        shape = ops[-1].out_shape
    if not ops:
        raise ValueError(f"{who} got a model without layers; pass an nn.Sequential of {SUPPORTED} layers")
    if len(shape) != 1:
        raise ValueError(f"the model's output per example has shape {shape}, but {who} bounds logits of shape (K,); "
                         f"end the model with an nn.Flatten() or nn.Linear")
    return Network(ops, relus)


def check_arguments(x: Tensor, eps: object, norm: object) -> str:
    """Checks the shared arguments of every bound; returns the lower-cased norm."""
    norm = check_choice(norm, "norm", NORMS)
    check_images(x)
    check_number(eps, "eps", low=0.0)
    return norm
