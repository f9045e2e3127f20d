"""Robustness verification: is every point of the threat model classified like the label?

An example is certified when a lower bound of every margin ``logit_y - logit_j`` (j != y) over
the threat model is positive. The margins are bounded as one specification ``C @ logits`` with
rows ``e_y - e_j``, folded into the last layers, which is much tighter than differencing the
logits' separate bounds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_labels, check_logits, check_number
from ._domain import InputSet
from ._layers import check_arguments, network
from .interval import spec_lower
from .linear import spec_bounds
from .milp import margin_spec, margins, model_logits, solve

__all__ = ["Verification", "verify", "METHODS", "STATUSES"]

METHODS = ("ibp", "crown", "milp")
STATUSES = ("certified", "falsified", "unknown")


class Verification(NamedTuple):
    """The outcome of :func:`verify` per example.

    ``certified``: (N,) bool, ``margin_lower > 0`` (and no counterexample found). ``status``: one of ``"certified"``,
    ``"falsified"`` (a misclassified point of the threat model was found: x itself, or the
    MILP's optimum) or ``"unknown"``, per example. ``margin_lower``: (N,) a lower bound of the
    smallest margin ``logit_y - max_{j != y} logit_j`` over the threat model.
    """

    certified: Tensor
    status: tuple[str, ...]
    margin_lower: Tensor


def verify(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", method: str = "ibp",
           time_limit: float = 10.0) -> Verification:
    """Verifies that every point of the eps-ball around x, intersected with [0, 1], is classified
    as y.

    Methods, from fastest and loosest to exact:

    - ``"ibp"``: interval bounds (Gowal et al., 2018) up to the last ReLU, the specification
      ``C`` (rows ``e_y - e_j``) folded into the layers after it (``W' = C W``, ``b' = C b``);
    - ``"crown"``: linear relaxation (Zhang et al., 2018) of ``C @ logits`` with CROWN
      intermediate bounds, intersected (elementwise max) with the IBP bound, so it certifies
      every example that ``"ibp"`` certifies;
    - ``"milp"``: exact (Tjeng et al., 2019), Linf only. Starting from the ``"crown"`` bounds, one
      mixed-integer program per example and per wrong class j whose bound is not yet positive,
      most threatening first, minimises ``logit_y - logit_j`` over the ball
      (``scipy.optimize.milp``); it stops at the first class with a negative optimum, after
      checking with the model's own forward pass that the optimum is misclassified. An example
      whose time runs out before a proof is ``"unknown"``. For small networks only.

    An example whose clean image is already misclassified is ``"falsified"`` by every method.
    IBP and CROWN compute in the dtype of x: in float32 a bound is exact only up to rounding
    (about 1e-6 relative), so pass float64 images to trust margins that close to zero. The
    MILP always works in float64 (on the CPU).

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits; an ``nn.Sequential`` of
            ``Normalize``, ``Linear``, ``Conv2d``, ``ReLU`` and ``Flatten`` layers.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        eps: radius of the threat model in pixel units, >= 0.
        norm: ``"linf"`` or ``"l2"`` (``"milp"`` needs ``"linf"``).
        method: ``"ibp"``, ``"crown"`` or ``"milp"``.
        time_limit: seconds of MILP solving per example (``"milp"`` only), > 0.

    Returns:
        ``Verification(certified, status, margin_lower)``: certified (N,) bool, status a tuple of
        N strings, margin_lower (N,) in the dtype of x; ``certified`` implies that no point of
        the threat model is misclassified.

    Raises:
        ValueError: for an unsupported layer (named with its position), eps < 0, an unknown
            norm or method, x outside [0, 1], a y that does not match x, time_limit <= 0, or
            ``method="milp"`` with ``norm="l2"``.
    """
    norm = check_arguments(x, eps, norm)
    method = check_choice(method, "method", METHODS)
    check_labels(y, x)
    check_number(time_limit, "time_limit", low=0.0, strict=True)
    if method == "milp" and norm != "linf":
        raise ValueError("method='milp' needs norm='linf', got norm='l2': the L2 ball is not a polytope, so it "
                         "has no exact encoding as a mixed-integer linear program; use method='crown' for L2")
    with torch.no_grad():
        x = x.detach()
        n = x.shape[0]
        net = network(model, x, who="verify")
        k = net.ops[-1].out_shape[0]
        if k < 2:
            raise ValueError(f"verify needs a classifier with at least 2 logits, got a model with {k}; "
                             f"bound its output with interval_bounds or linear_bounds instead")
        if n == 0:
            return Verification(torch.zeros(0, dtype=torch.bool, device=x.device), (), x.new_zeros(0))
        logits = model_logits(model, x)
        check_logits(logits, y, n)
        if logits.shape[1] != k:
            raise ValueError(f"the model returns {logits.shape[1]} logits but its layers give {k}; "
                             f"pass a model whose forward runs exactly its layers")
        wrong = margins(logits, y) < 0
        if method == "milp":
            outcomes = solve(model, x, y, eps=eps, time_limit=time_limit, verify_mode=True, who="verify")
            lower = torch.tensor([float(o.lower.min()) for o in outcomes], dtype=torch.float64).to(x)
            falsified = torch.tensor([o.falsified for o in outcomes], device=x.device) | wrong
        else:
            inputs = InputSet(x, eps, norm)
            spec, _ = margin_spec(y, k, x.dtype)
            bound = spec_lower(net, inputs, spec)  # (N, K - 1)
            if method == "crown":
                bound = torch.maximum(bound, spec_bounds(net, inputs, spec, "crown", upper=False)[0])
            lower = bound.min(dim=1).values
            falsified = wrong
    # A counterexample checked by the model's own forward pass outranks a bound that rounding
    # (float32, or eps = 0 exactly at a tie) made positive.
    certified = (lower > 0) & ~falsified
    status = tuple("certified" if c else "falsified" if f else "unknown"
                   for c, f in zip(certified.tolist(), falsified.tolist()))
    return Verification(certified, status, lower)
