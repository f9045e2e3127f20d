"""The set of inputs a bound holds over: the eps-ball around x intersected with [0, 1].

Both bounds reduce, at the input, to one question: the smallest value of a linear function
``a . x' + c`` over that set. For Linf the set is the box ``[clamp(x - eps), clamp(x + eps)]``
and the answer is exact. For L2 it is the larger of two sound answers: the ball alone
(``a . x - eps * ||a||_2``, Hoelder's inequality with the dual norm, ignoring [0, 1]) and the
box that contains the ball and is clipped to [0, 1].
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["InputSet", "box_lower"]


def box_lower(a: Tensor, bias: Tensor, mid: Tensor, rad: Tensor) -> Tensor:
    """The minimum of ``a . t + bias`` over the box ``mid +- rad``.

    Args:
        a: rows, (B, M, *shape) with B = N or 1 (then shared by every example).
        bias: (B, M).
        mid: box centres, (N, *shape).
        rad: box half-widths, (N, *shape) or (1, *shape), >= 0.

    Returns:
        (N, M) lower bounds.
    """
    a = a.flatten(2)  # (B, M, D)
    mid = mid.flatten(1).unsqueeze(-1)  # (N, D, 1)
    rad = rad.reshape(rad.shape[0], -1).unsqueeze(-1)  # (N or 1, D, 1)
    return bias + (a @ mid).squeeze(-1) - (a.abs() @ rad).squeeze(-1)


class InputSet:
    """The threat model's inputs around a batch ``x``: the eps-ball in ``norm``, within [0, 1].

    ``mid`` and ``rad`` describe the box ``[clamp(x - eps, 0, 1), clamp(x + eps, 0, 1)]``: the set
    itself for Linf, a box containing it for L2.
    """

    def __init__(self, x: Tensor, eps: float, norm: str):
        self.x, self.eps, self.norm = x, float(eps), norm
        lower, upper = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
        self.lower, self.upper = lower, upper
        self.mid, self.rad = (lower + upper) / 2, (upper - lower) / 2

    def lower_bound(self, a: Tensor, bias: Tensor) -> Tensor:
        """The minimum of ``a . x' + bias`` over the set (a sound lower bound for L2).

        Args:
            a: rows, (B, M, C, H, W) with B = N or 1.
            bias: (B, M).

        Returns:
            (N, M) lower bounds.
        """
        box = box_lower(a, bias, self.mid, self.rad)
        if self.norm == "linf":
            return box
        flat = a.flatten(2)
        ball = bias + (flat @ self.x.flatten(1).unsqueeze(-1)).squeeze(-1) - self.eps * flat.norm(dim=-1)
        return box.maximum(ball)
