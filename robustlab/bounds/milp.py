"""Exact verification of small ReLU networks as mixed-integer linear programs (Tjeng, Xiao &
Tedrake, 2019), solved with ``scipy.optimize.milp`` (HiGHS).

For one image the program's variables are the input ``x'`` in the box
``[clamp(x - eps, 0, 1), clamp(x + eps, 0, 1)]`` (the Linf threat model; the L2 ball is not a
polytope), the output ``a`` of every ReLU that is not always off, and one binary ``d`` for every
ReLU whose input bounds ``l < 0 < u`` leave it unstable. With ``z = W a_prev + b`` (the affine
layers between two ReLUs composed into one sparse matrix, convolutions included):

- always on (``l >= 0``): ``a = z``;
- always off (``u <= 0``): ``a = 0``, the neuron is dropped;
- unstable (big-M): ``a >= z``, ``a <= z - l (1 - d)``, ``0 <= a <= u d``.

The bounds ``l, u`` are CROWN's (intersected with intervals), computed in float64 and widened by
a relative 1e-9 so that rounding cannot cut off a reachable point. Minimising the margin
``logit_y - logit_j`` over this set is exact: its optimum is the smallest margin in the ball.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds as VarBounds
from scipy.optimize import LinearConstraint, milp
from torch import Tensor, nn

from .._checks import check_images, check_labels, check_logits, check_number, eval_mode
from ._domain import InputSet
from ._layers import Network, Reshape, Scale, network
from .interval import spec_lower
from .linear import pre_activation_bounds, spec_bounds

__all__ = ["MinimumMargin", "minimum_margin"]

_WIDEN = 1e-9  # relative widening of the float64 ReLU input bounds used as big-M constants
_TOL = 1e-6  # a solver's dual bound is trusted up to this (relative) tolerance: HiGHS works to ~1e-7


class MinimumMargin(NamedTuple):
    """The smallest margin ``logit_y - max_{j != y} logit_j`` over the threat model, per example.

    ``lower <= true minimum <= upper``; ``upper`` is the margin the model really has at
    ``x_worst``. Where ``exact`` is True every class was solved to optimality (up to HiGHS's
    relative gap of 1e-4) within the time limit.
    """

    lower: Tensor
    upper: Tensor
    x_worst: Tensor
    exact: Tensor


def model_logits(model: nn.Module, x: Tensor) -> Tensor:
    """The model's own logits on ``x`` (eval mode, no gradient), in the dtype of ``x``."""
    dtype = next((t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), x.dtype)
    with eval_mode(model), torch.no_grad():
        return model(x.to(dtype)).to(x.dtype)


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """``logit_y - max_{j != y} logit_j``, (N,): negative where the model is wrong."""
    other = logits.scatter(1, y[:, None], float("-inf"))
    return logits.gather(1, y[:, None]).squeeze(1) - other.max(dim=1).values


def _to_sparse(weight: Tensor) -> sparse.csr_matrix:
    return sparse.csr_matrix(weight.cpu().numpy())


class _Encoder:
    """The model's affine segments (between ReLUs) as sparse float64 matrices, built once."""

    def __init__(self, net: Network):
        self.segments: list[tuple[sparse.csr_matrix, np.ndarray]] = []
        bounds = [-1, *net.relus, len(net.ops)]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            n = int(np.prod(net.ops[start].out_shape)) if start >= 0 else int(np.prod(net.ops[0].in_shape))
            weight, bias = sparse.identity(n, format="csr"), np.zeros(n)
            for op in net.ops[start + 1:stop]:
                if isinstance(op, Reshape):
                    continue
                if isinstance(op, Scale):  # a diagonal matrix: no identity basis needed
                    scale = op.scale.expand(op.in_shape).flatten().cpu().numpy()
                    shift = op.shift.expand(op.in_shape).flatten().cpu().numpy()
                    weight, bias = sparse.diags(scale) @ weight, scale * bias + shift
                else:
                    w, b = op.dense()
                    w = _to_sparse(w)
                    weight, bias = w @ weight, w @ bias + b.cpu().numpy()
            self.segments.append((sparse.csr_matrix(weight), bias))

    def program(self, lo: np.ndarray, hi: np.ndarray, pre: list[tuple[np.ndarray, np.ndarray]]) -> "_Program":
        """The mixed-integer program of one example: input box ``[lo, hi]`` (flat) and the
        ReLU input bounds ``pre`` (flat, per ReLU)."""
        n0 = lo.size
        col_lo, col_hi, integer = [lo], [hi], [np.zeros(n0)]
        rows, cols, vals, row_lo, row_hi = [], [], [], [], []
        n_vars, n_rows = n0, 0
        prev_cols, prev_keep = np.arange(n0), None

        def add(block: sparse.spmatrix, row_off: int, col_map: np.ndarray) -> None:
            block = block.tocoo()
            rows.append(block.row + row_off)
            cols.append(col_map[block.col])
            vals.append(block.data)

        for (weight, bias), (lo_z, hi_z) in zip(self.segments[:-1], pre):
            w = weight if prev_keep is None else weight[:, prev_keep]
            scale = 1.0 + np.maximum(np.abs(lo_z), np.abs(hi_z))
            lo_z, hi_z = lo_z - _WIDEN * scale, hi_z + _WIDEN * scale
            act, unst = np.flatnonzero(lo_z >= 0), np.flatnonzero((lo_z < 0) & (hi_z > 0))
            alive = np.union1d(act, unst)
            pos = np.full(lo_z.size, -1)
            pos[alive] = np.arange(alive.size)
            a_cols = n_vars + np.arange(alive.size)  # variables: outputs of the live ReLUs, then binaries
            d_cols = n_vars + alive.size + np.arange(unst.size)
            n_vars += alive.size + unst.size
            # On: a - W v = b.
            add(-w[act], n_rows, prev_cols)
            add(sparse.identity(act.size), n_rows, a_cols[pos[act]])
            row_lo.append(bias[act])
            row_hi.append(bias[act])
            n_rows += act.size
            # Unstable: a - W v >= b, and a - W v - lo_z d <= b - lo_z.
            w_u, a_u = -w[unst], a_cols[pos[unst]]
            for lo_side, hi_side in ((bias[unst], np.full(unst.size, np.inf)),
                                     (np.full(unst.size, -np.inf), bias[unst] - lo_z[unst])):
                add(w_u, n_rows, prev_cols)
                add(sparse.identity(unst.size), n_rows, a_u)
                row_lo.append(lo_side)
                row_hi.append(hi_side)
                n_rows += unst.size
            add(sparse.diags(-lo_z[unst]), n_rows - unst.size, d_cols)
            # Unstable: a - hi_z d <= 0.
            add(sparse.identity(unst.size), n_rows, a_u)
            add(sparse.diags(-hi_z[unst]), n_rows, d_cols)
            row_lo.append(np.full(unst.size, -np.inf))
            row_hi.append(np.zeros(unst.size))
            n_rows += unst.size
            a_lo = np.where(lo_z[alive] >= 0, lo_z[alive], 0.0)
            col_lo += [a_lo, np.zeros(unst.size)]
            col_hi += [np.maximum(hi_z[alive], a_lo), np.ones(unst.size)]
            integer += [np.zeros(alive.size), np.ones(unst.size)]
            prev_cols, prev_keep = a_cols, alive
        weight, bias = self.segments[-1]
        w_out = weight if prev_keep is None else weight[:, prev_keep]
        matrix = sparse.csr_matrix((np.concatenate(vals) if vals else np.zeros(0),
                                    (np.concatenate(rows) if rows else np.zeros(0, int),
                                     np.concatenate(cols) if cols else np.zeros(0, int))), shape=(n_rows, n_vars))
        return _Program(matrix, np.concatenate(row_lo) if row_lo else np.zeros(0),
                        np.concatenate(row_hi) if row_hi else np.zeros(0),
                        VarBounds(np.concatenate(col_lo), np.concatenate(col_hi)), np.concatenate(integer),
                        w_out.toarray(), bias, prev_cols, n0)


class _Program(NamedTuple):
    matrix: sparse.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    var_bounds: VarBounds
    integrality: np.ndarray
    out_weight: np.ndarray  # (K, alive neurons of the last ReLU, or input size)
    out_bias: np.ndarray
    out_cols: np.ndarray
    n_inputs: int

    def minimise(self, y: int, j: int, time_limit: float) -> tuple[bool, float, np.ndarray | None]:
        """Minimises ``logit_y - logit_j``: (solved to optimality, sound lower bound, best input or None)."""
        c = np.zeros(self.integrality.size)
        c[self.out_cols] = self.out_weight[y] - self.out_weight[j]
        const = self.out_bias[y] - self.out_bias[j]
        constraints = [LinearConstraint(self.matrix, self.row_lo, self.row_hi)] if self.matrix.shape[0] else []
        res = milp(c, integrality=self.integrality, bounds=self.var_bounds, constraints=constraints,
                   options={"time_limit": max(time_limit, 1e-3)})
        dual = getattr(res, "mip_dual_bound", None)
        if dual is None or not math.isfinite(dual):
            dual = res.fun if res.status == 0 and res.fun is not None else -math.inf
        lower = dual + const
        lower -= _TOL * (1.0 + abs(lower)) if math.isfinite(lower) else 0.0
        point = None if res.x is None else res.x[:self.n_inputs]
        return res.status == 0, lower, point


class _Outcome(NamedTuple):
    lower: np.ndarray  # (K - 1,) per target
    falsified: bool
    exact: bool
    upper: float
    x_worst: Tensor


def _search(program: _Program, model: nn.Module, x: Tensor, y: int, box: tuple[Tensor, Tensor], targets: np.ndarray,
            bounds: np.ndarray, time_limit: float, *, verify_mode: bool) -> _Outcome:
    """Solves the targets of one example in increasing order of their bound.

    ``verify_mode``: skip targets already certified and stop at the first counterexample;
    otherwise skip only targets whose bound cannot go below the smallest margin found so far
    (so that the minimum is exact).
    """
    start = time.monotonic()
    lower = bounds.copy()
    y_t = torch.tensor([y], device=x.device)
    upper = float(margins(model_logits(model, x), y_t)[0])
    x_worst, falsified, exact = x, upper < 0, True
    for t in np.argsort(bounds, kind="stable"):
        if (verify_mode and (lower[t] > 0 or falsified)) or (not verify_mode and lower[t] >= upper):
            continue
        remaining = time_limit - (time.monotonic() - start)
        if remaining <= 0:
            exact = False
            break
        solved, dual, point = program.minimise(y, int(targets[t]), remaining)
        exact &= solved
        lower[t] = max(lower[t], dual)
        if point is not None:
            candidate = torch.as_tensor(point, dtype=x.dtype, device=x.device).view_as(x)
            candidate = torch.minimum(torch.maximum(candidate, box[0]), box[1])
            m = float(margins(model_logits(model, candidate), y_t)[0])
            if m < upper:
                upper, x_worst = m, candidate
            falsified |= m < 0
    return _Outcome(lower, falsified, exact, upper, x_worst)


def margin_spec(y: Tensor, k: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rows ``e_y - e_j`` for every ``j != y``: (N, K - 1, K), and the targets ``j``, (N, K - 1)."""
    n = y.shape[0]
    classes = torch.arange(k, device=y.device).expand(n, k)
    targets = classes[classes != y[:, None]].view(n, k - 1)
    spec = torch.zeros(n, k - 1, k, dtype=dtype, device=y.device)
    spec.scatter_(2, y.view(n, 1, 1).expand(n, k - 1, 1), 1.0)
    spec.scatter_(2, targets.unsqueeze(-1), -1.0)
    return spec, targets


def solve(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, time_limit: float, verify_mode: bool,
          who: str) -> list[_Outcome]:
    """The per-example MILP searches (see ``_search``) on checked arguments, starting from the
    CROWN bounds of the margins intersected with IBP's, all in float64 on the CPU."""
    x64 = x.detach().double().cpu()
    net = network(model, x64, who=who)
    k = net.ops[-1].out_shape[0]
    check_logits(model_logits(model, x[:1]), y[:1], 1, stacklevel=4)
    if int(y.max()) >= k:
        raise ValueError(f"labels must be < the model's {k} classes, got max label {int(y.max())}; "
                         f"check that y matches this model's output")
    inputs = InputSet(x64, eps, "linf")
    y_cpu = y.cpu()
    spec, targets = margin_spec(y_cpu, k, torch.float64)
    pre = pre_activation_bounds(net, inputs, "crown")
    crown, _ = spec_bounds(net, inputs, spec, "crown", upper=False, pre=pre)
    bounds = torch.maximum(crown, spec_lower(net, inputs, spec))  # (N, K - 1)
    encoder = _Encoder(net)
    box = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    outcomes = []
    for i in range(x.shape[0]):  # one program per example: MILP does not batch
        program = encoder.program(inputs.lower[i].flatten().numpy(), inputs.upper[i].flatten().numpy(),
                                  [(pre[r][0][i].flatten().numpy(), pre[r][1][i].flatten().numpy())
                                   for r in net.relus])
        outcomes.append(_search(program, model, x[i:i + 1], int(y_cpu[i]), (box[0][i:i + 1], box[1][i:i + 1]),
                                targets[i].numpy(), bounds[i].numpy(), time_limit, verify_mode=verify_mode))
    return outcomes


def minimum_margin(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, time_limit: float = 10.0
                   ) -> MinimumMargin:
    """The smallest margin ``logit_y - max_{j != y} logit_j`` over the Linf eps-ball around x
    intersected with [0, 1], and the input that attains it, by mixed-integer programming.

    For each wrong class j, in increasing order of its CROWN bound, one MILP minimises
    ``logit_y - logit_j`` exactly (HiGHS through ``scipy.optimize.milp``); a class whose CROWN
    bound is already at least the smallest margin found is skipped, as it cannot be the
    minimum. Exponential in the number of unstable ReLUs in the worst case: meant for small
    networks (an MLP with a few hundred hidden units, tiny conv nets) and small eps. One program
    per example (no batching); the model must be an ``nn.Sequential`` of ``Normalize``,
    ``Linear``, ``Conv2d``, ``ReLU`` and ``Flatten`` layers.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        eps: Linf radius in pixel units, >= 0.
        time_limit: seconds per example, > 0.

    Returns:
        ``MinimumMargin(lower, upper, x_worst, exact)``: lower and upper (N,) bounds on the
        smallest margin, in the dtype of x; x_worst, same shape as x, a point of the ball in
        [0, 1] whose margin (the model's own) is ``upper``; exact (N,) bool, True where every
        class was solved within the time limit (then lower and upper agree up to the solver's
        tolerance).
    """
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_number(time_limit, "time_limit", low=0.0, strict=True)
    with torch.no_grad():
        x = x.detach()
        if x.shape[0] == 0:
            empty = x.new_zeros(0)
            return MinimumMargin(empty, empty.clone(), x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device))
        outcomes = solve(model, x, y, eps=eps, time_limit=time_limit, verify_mode=False, who="minimum_margin")
    lower = torch.tensor([float(o.lower.min()) for o in outcomes], dtype=torch.float64).to(x)
    upper = torch.tensor([o.upper for o in outcomes], dtype=torch.float64).to(x)
    x_worst = torch.cat([o.x_worst for o in outcomes])
    exact = torch.tensor([o.exact for o in outcomes], device=x.device)
    return MinimumMargin(lower, upper, x_worst, exact)
