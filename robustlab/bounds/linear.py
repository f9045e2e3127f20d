"""Linear relaxation bounds by back-substitution (CROWN; Zhang et al., 2018).

A row vector ``a`` over some layer's output is pushed back towards the input: through an affine
layer it becomes ``a W`` (plus the constant ``a . b``), through a ReLU each coordinate is
replaced by a linear bound on the ReLU — the lower one where ``a`` is positive, the upper one
where it is negative. At the input, the linear function is minimised over the threat model in
closed form. With the ReLU input bounds ``l < 0 < u`` the relaxations are

- upper: the chord ``u / (u - l) * (z - l)``;
- lower: ``s * z`` with CROWN's adaptive slope ``s = 1`` if ``u >= -l`` else ``0``;

and a stable ReLU (``l >= 0`` or ``u <= 0``) is exactly the identity or zero. The ReLU input
bounds come first, layer by layer, either from CROWN itself or from IBP.

Back-substitution through a convolution is its transposed convolution (``conv_transpose2d``), so
no dense matrix is built; the rows are processed in chunks of at most about
``_CHUNK_ELEMENTS`` numbers, which bounds memory whatever the batch and layer sizes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ._domain import InputSet
from ._layers import Affine, Network, ReLU, check_arguments, network
from .interval import Bounds, boxes

__all__ = ["linear_bounds", "INTERMEDIATE"]

INTERMEDIATE = ("crown", "ibp")

_CHUNK_ELEMENTS = 2 ** 24  # numbers in one chunk of back-substituted rows (64 MiB in float32)


def relaxation(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CROWN's linear bounds ``s_l z <= relu(z) <= s_u z + t_u`` for ``lower <= z <= upper``.

    Returns:
        ``(s_l, s_u, t_u)``, each the shape of ``lower``.
    """
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, upper - lower, torch.ones_like(upper))
    chord = upper / width
    ones, zeros = torch.ones_like(lower), torch.zeros_like(lower)
    s_u = torch.where(unstable, chord, torch.where(active, ones, zeros))
    t_u = torch.where(unstable, -chord * lower, zeros)
    s_l = torch.where(unstable, (upper >= -lower).to(lower.dtype), s_u)
    return s_l, s_u, t_u


def back_substitute(net: Network, end: int, a: Tensor, relax: dict[int, tuple[Tensor, Tensor, Tensor]]
                    ) -> tuple[Tensor, Tensor]:
    """Pushes rows over the output of ``ops[end - 1]`` back to the input, lower-bounding.

    Args:
        a: (B, M, *out_shape of ops[end - 1]); B = 1 for rows shared by every example.
        relax: ReLU position -> ``relaxation(l, u)`` of its input, (N, *shape) each.

    Returns:
        ``(a_in, bias)``: (B', M, C, H, W) and (B', M), with ``a . f(x') >= a_in . x' + bias``.
    """
    bias = a.new_zeros(a.shape[:2])
    for i in range(end - 1, -1, -1):
        op = net.ops[i]
        if isinstance(op, ReLU):
            s_l, s_u, t_u = (r.unsqueeze(1) for r in relax[i])  # (N, 1, *shape)
            neg = a.clamp(max=0)
            bias = bias + (neg * t_u).flatten(2).sum(-1)
            a = a * s_l + neg * (s_u - s_l)
        else:
            bias = bias + op.bias_term(a)
            a = op.backward(a)
    return a, bias


def rows_lower(net: Network, end: int, rows: Tensor, relax: dict, inputs: InputSet) -> Tensor:
    """Lower bounds of ``rows . (output of ops[end - 1])`` over the threat model, in chunks of rows.

    Args:
        rows: (B, M, *out_shape), B = N or 1.

    Returns:
        (N, M).
    """
    n = inputs.x.shape[0]
    out = [inputs.lower_bound(*back_substitute(net, end, part, relax)).expand(n, -1)
           for part in rows.split(_chunk(net, end, n), dim=1)]
    return torch.cat(out, dim=1)


def _chunk(net: Network, end: int, n: int) -> int:
    """How many rows per example to back-substitute at once through ``ops[:end]`` for a batch of
    ``n``: at most about ``_CHUNK_ELEMENTS`` numbers in the widest layer."""
    widest = max(max(math.prod(op.in_shape), math.prod(op.out_shape)) for op in net.ops[:end])
    return max(1, _CHUNK_ELEMENTS // (n * widest))


def pre_activation_bounds(net: Network, inputs: InputSet, intermediate: str) -> dict[int, tuple[Tensor, Tensor]]:
    """Bounds of every ReLU's input, ReLU position -> ``(lower, upper)``, (N, *shape) each.

    ``"ibp"``: the interval bounds. ``"crown"``: layer by layer, the interval bounds obtained from
    the previous ReLU's (already tightened) bounds, intersected with CROWN's bounds for the
    neurons that interval leaves unstable, per example (for a stable neuron only the sign
    matters, and it is already known). The first ReLU keeps its interval bounds
    when only Normalize/Flatten and one Linear or Conv2d precede it: the interval is exact there.
    """
    ibp = boxes(net, inputs)
    if intermediate == "ibp":
        return {r: _box_before(r, ibp, inputs) for r in net.relus}
    out: dict[int, tuple[Tensor, Tensor]] = {}
    relax: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    prev = -1
    for r in net.relus:
        if prev < 0:
            lower, upper = _box_before(r, ibp, inputs)
            exact = sum(isinstance(op, Affine) and not op.diagonal for op in net.ops[:r]) <= 1
        else:
            mid, rad = (out[prev][0].clamp_min(0) + out[prev][1].clamp_min(0)) / 2, \
                (out[prev][1].clamp_min(0) - out[prev][0].clamp_min(0)) / 2
            for op in net.ops[prev + 1:r]:
                mid, rad = op.forward(mid), op.forward_abs(rad)
            lower, upper = mid - rad, mid + rad
            exact = False
        if not exact and r > 0:
            flat_l, flat_u = lower.flatten(1), upper.flatten(1)
            unstable = (flat_l < 0) & (flat_u > 0)  # (N, D)
            m = int(unstable.sum(dim=1).max())
            if m:
                # Each example's own unstable neurons first (then stable ones as padding, whose
                # CROWN bounds are merely redundant): far fewer rows than the batch's union.
                order = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :m]  # (N, m)
                n, d = flat_l.shape
                for idx in order.split(_chunk(net, r, 2 * n), dim=1):
                    c = idx.shape[1]
                    e = lower.new_zeros(n, c, d).scatter_(2, idx.unsqueeze(-1), 1.0).view(n, c, *net.ops[r].in_shape)
                    both = rows_lower(net, r, torch.cat([e, -e], dim=1), relax, inputs)  # (N, 2c)
                    flat_l = flat_l.scatter(1, idx, flat_l.gather(1, idx).maximum(both[:, :c]))
                    flat_u = flat_u.scatter(1, idx, flat_u.gather(1, idx).minimum(-both[:, c:]))
            lower, upper = flat_l.view_as(lower), flat_u.view_as(upper)
        out[r] = (lower, upper)
        relax[r] = relaxation(lower, upper)
        prev = r
    return out


def _box_before(r: int, ibp: list[tuple[Tensor, Tensor]], inputs: InputSet) -> tuple[Tensor, Tensor]:
    mid, rad = (inputs.mid, inputs.rad) if r == 0 else ibp[r - 1]
    return mid - rad, mid + rad


def spec_bounds(net: Network, inputs: InputSet, spec: Tensor, intermediate: str, *, upper: bool = True,
                pre: dict[int, tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, Tensor | None]:
    """CROWN bounds of ``spec @ logits``: (N, M) lower bounds and, if ``upper``, upper bounds.

    Args:
        spec: (N, M, K) or (1, M, K).
        pre: the ReLU input bounds if already computed (``pre_activation_bounds``).
    """
    if pre is None:
        pre = pre_activation_bounds(net, inputs, intermediate)
    relax = {r: relaxation(*lu) for r, lu in pre.items()}
    m = spec.shape[1]
    rows = torch.cat([spec, -spec], dim=1) if upper else spec
    low = rows_lower(net, len(net.ops), rows, relax, inputs)
    return (low[:, :m], -low[:, m:]) if upper else (low, None)


def linear_bounds(model: nn.Module, x: Tensor, *, eps: float, norm: str = "linf", C: Tensor | None = None,
                  intermediate: str = "crown") -> Bounds:
    """Linear relaxation bounds (CROWN; Zhang et al., 2018) of the logits, or of ``C @ logits``,
    over the eps-ball around x intersected with [0, 1].

    Each bound is one linear function of the input, obtained by back-substituting linear
    relaxations of the ReLUs (the chord above; below, slope 1 if ``u >= -l`` else 0) from the
    output to the input, then minimised over the threat model in closed form: over the box
    ``[clamp(x - eps, 0, 1), clamp(x + eps, 0, 1)]`` for Linf; for L2, the better of the ball
    alone (centre term minus eps times the L2 norm of the row, which ignores [0, 1]) and the
    ball's bounding box in [0, 1]. The ReLU input bounds are computed first, layer by layer
    (``intermediate``). Convolutions are back-substituted with ``conv_transpose2d``, so no dense
    matrix is built. Unlike :func:`verify` (method ``"crown"``) the result is not intersected with
    the interval bounds, so on some outputs it can be looser than IBP.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits; an ``nn.Sequential`` of
            ``Normalize``, ``Linear``, ``Conv2d``, ``ReLU`` and ``Flatten`` layers.
        x: clean images, (N, C, H, W), in [0, 1].
        eps: radius of the threat model in pixel units, >= 0.
        norm: ``"linf"`` or ``"l2"``.
        C: optional specification, (N, M, K) or (M, K) (shared by all examples): the bounds are
            on ``C @ logits``, e.g. rows ``e_y - e_j`` for the margins, much tighter than
            differences of the logits' bounds.
        intermediate: how the ReLU input bounds are obtained: ``"crown"`` (default; CROWN itself,
            layer by layer, intersected with intervals) or ``"ibp"`` (interval bounds: faster
            and looser, as in CROWN-IBP).

    Returns:
        ``Bounds(lower, upper)``, each (N, K), or (N, M) with ``C``: for every x' in the threat
        model, ``lower <= model(x') <= upper`` (``C @ model(x')`` with ``C``).

    Raises:
        ValueError: for an unsupported layer (named with its position), eps < 0, an unknown
            norm or intermediate, x outside [0, 1] or a C of the wrong shape.
    """
    norm = check_arguments(x, eps, norm)
    intermediate = check_choice(intermediate, "intermediate", INTERMEDIATE)
    with torch.no_grad():
        x = x.detach()
        net = network(model, x, who="linear_bounds")
        k = net.ops[-1].out_shape[0]
        spec = _check_spec(C, x, k)
        if x.shape[0] == 0:
            empty = x.new_zeros(0, k if spec is None else spec.shape[1])
            return Bounds(empty, empty.clone())
        if spec is None:
            spec = torch.eye(k, dtype=x.dtype, device=x.device).unsqueeze(0)
        lower, upper = spec_bounds(net, InputSet(x, eps, norm), spec, intermediate)
    return Bounds(lower, upper)


def _check_spec(C: object, x: Tensor, k: int) -> Tensor | None:
    if C is None:
        return None
    if not isinstance(C, Tensor):
        raise TypeError(f"C must be a torch.Tensor of shape (N, M, {k}) or (M, {k}), got {type(C).__name__}")
    spec = C.detach()
    if spec.dim() == 2:
        spec = spec.unsqueeze(0)
    if spec.dim() != 3 or spec.shape[2] != k or spec.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"C must have shape (N, M, K) = ({x.shape[0]}, M, {k}) or (M, {k}) for this {k}-class "
                         f"model and {x.shape[0]} images, got {tuple(C.shape)}")
    if spec.device != x.device:
        raise ValueError(f"C is on {spec.device} but x is on {x.device}; move both to one device")
    return spec.to(x.dtype)
