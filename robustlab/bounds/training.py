"""Differentiable interval and linear bounds for certified training (Gowal et al., 2018; Zhang
et al., 2020).

Training against a certificate needs the bound *as a function of the weights*: the same interval
propagation as :func:`robustlab.bounds.interval_bounds`, run on the model's live parameters so
that the loss can be back-propagated through it. :func:`worst_case_logits` returns, per example,
the logits an adversary could at worst produce according to the interval bound; cross-entropy on
them is Gowal et al.'s robust loss, an upper bound on the cross-entropy of any point in the ball.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_images, check_labels, check_number
from ..models import Normalize
from ._domain import InputSet
from ._layers import SUPPORTED, layers, network
from .linear import spec_bounds
from .milp import margin_spec

__all__ = ["worst_case_logits", "crown_ibp_logits"]


def worst_case_logits(model: nn.Module, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """Per example, ``-lower(logit_y - logit_j)`` for every class j: the interval bound's worst case.

    Propagates the box ``[x - eps, x + eps] ∩ [0, 1]`` (Linf) through the model's layers as a
    centre and a half-width (``W mid + b``, ``|W| rad``; ReLU clips both ends). The last affine
    layer (after the last ReLU) is folded with the margin specification, ``W' = W_y - W_j``, which
    bounds each margin directly instead of subtracting two separate logit intervals (much
    tighter). Entry y is exactly 0, and ``cross_entropy(worst_case_logits(...), y)`` is the
    robust loss of interval bound propagation training: it upper-bounds the cross-entropy at
    every point of the ball. Differentiable in the model's parameters; the model is only read
    (its training flag and buffers are not changed).

    Args:
        model: an ``nn.Sequential`` (nested ones allowed) of ``Normalize``, ``Linear``,
            ``Conv2d``, ``ReLU`` and ``Flatten`` layers ending in a ``Linear`` layer.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        eps: Linf radius in pixel units, >= 0.

    Returns:
        (N, K) tensor: entry j is an upper bound on ``logit_j - logit_y`` over the ball; when
        every off-label entry is < 0 the example is certified (as by ``verify(method="ibp")``).
    """
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    mods = layers(model)
    last = max((i for i, (_, m) in enumerate(mods) if type(m) is nn.ReLU), default=-1)
    tail = mods[last + 1:]
    if not tail or type(tail[-1][1]) is not nn.Linear or any(type(m) not in (nn.Linear, nn.Flatten)
                                                               for _, m in tail):
        raise ValueError("worst_case_logits needs a model whose layers after the last ReLU are a single nn.Linear "
                         "(optionally after nn.Flatten), as in robustlab.models.SmallCNN and MLP")
    lower, upper = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    for name, m in mods[:-1]:
        if isinstance(m, Normalize):
            mean, std = m.mean.view(1, -1, 1, 1), m.std.view(1, -1, 1, 1)
            mid, rad = (mid - mean) / std, rad / std.abs()
        elif type(m) is nn.Flatten:
            mid, rad = m(mid), m(rad)
        elif type(m) is nn.Linear:
            mid, rad = F.linear(mid, m.weight, m.bias), F.linear(rad, m.weight.abs())
        elif type(m) is nn.Conv2d:
            if tuple(m.dilation) != (1, 1) or m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ValueError(f"Conv2d at position {name} with dilation={m.dilation}, groups={m.groups}, "
                                 f"padding={m.padding!r} is not supported by worst_case_logits; use integer zero "
                                 "padding, dilation 1 and groups 1")
            mid = F.conv2d(mid, m.weight, m.bias, m.stride, m.padding)
            rad = F.conv2d(rad, m.weight.abs(), None, m.stride, m.padding)
        elif type(m) is nn.ReLU:
            hi, lo = (mid + rad).clamp_min(0.0), (mid - rad).clamp_min(0.0)
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
        else:
            raise ValueError(f"{type(m).__name__} at position {name} is not supported by worst_case_logits; "
                             f"supported: {SUPPORTED}")
    final = mods[-1][1]
    w, b = final.weight, final.bias  # (K, D), (K,)
    k = w.shape[0]
    if y.numel() and int(y.max()) >= k:
        raise ValueError(f"y holds label {int(y.max())}, but the model has {k} outputs; pass labels in [0, {k - 1}]")
    # Margin rows: W_y - W_j per example, (N, K, D); the bound of <w', box> is w'.mid - |w'|.rad.
    w_m = w[y].unsqueeze(1) - w.unsqueeze(0)
    margin_lower = torch.einsum("nkd,nd->nk", w_m, mid) - torch.einsum("nkd,nd->nk", w_m.abs(), rad)
    if b is not None:
        margin_lower = margin_lower + (b[y].unsqueeze(1) - b.unsqueeze(0))
    return -margin_lower


def crown_ibp_logits(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, beta: float) -> Tensor:
    """CROWN-IBP's worst-case logits (Zhang et al., 2020): ``beta * CROWN + (1 - beta) * IBP``.

    The margins ``logit_y - logit_j`` are lower-bounded twice: by :func:`worst_case_logits`
    (interval bounds, the last layer folded with the margin) and by a backward linear relaxation
    (CROWN) of the margin specification whose ReLU input bounds are the interval ones, so it
    costs about one backward pass per class on top of IBP instead of CROWN's per-neuron passes.
    The two are mixed with weight ``beta``; any convex mixture of lower bounds is a lower bound,
    so the result is as sound as either. Zhang et al. start training at ``beta = 1`` (the tighter
    CROWN-IBP bound while eps is small) and end at ``beta = 0`` (plain IBP). Differentiable in the
    model's parameters; the model is only read.

    Args:
        model, x, y, eps: as in :func:`worst_case_logits`.
        beta: weight of the CROWN-IBP bound, in [0, 1]; at 0 no linear bound is computed.

    Returns:
        (N, K) tensor: entry j is an upper bound on ``logit_j - logit_y`` over the ball (entry y
        is 0), for ``cross_entropy`` as in :func:`worst_case_logits`.
    """
    check_number(beta, "beta", low=0.0)
    if beta > 1:
        raise ValueError(f"beta is the weight of the CROWN-IBP bound, in [0, 1]; got {beta}")
    ibp = worst_case_logits(model, x, y, eps=eps)  # checks model, x, y and eps
    if beta == 0 or x.shape[0] == 0:
        return ibp
    net = network(model, x, who="crown_ibp_logits", live=True)
    spec, targets = margin_spec(y, ibp.shape[1], x.dtype)  # rows e_y - e_j for j != y
    margin_lower, _ = spec_bounds(net, InputSet(x.detach(), eps, "linf"), spec, "ibp", upper=False)
    crown = torch.zeros_like(ibp).scatter(1, targets, -margin_lower)  # entry y stays 0
    return beta * crown + (1.0 - beta) * ibp
