"""Comparisons that turn a difference between a student's result and the reference into a
sentence the student can act on (raised as :class:`Feedback`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .feedback import Feedback

__all__ = ["fail", "as_tensor", "unchanged", "in_box", "in_linf_ball", "in_l2_ball", "close", "matches", "scalar_loss"]


def fail(item: str, message: str) -> None:
    raise Feedback(f"{item}: {message}")


def as_tensor(item: str, value: Any, like: Tensor, what: str = "your result") -> Tensor:
    if not isinstance(value, Tensor):
        fail(item, f"{what} should be a torch.Tensor of shape {tuple(like.shape)}, got {type(value).__name__}")
    if value.shape != like.shape:
        fail(item, f"{what} has shape {tuple(value.shape)}, expected {tuple(like.shape)} (the shape of the input)")
    if not value.dtype.is_floating_point:
        fail(item, f"{what} has dtype {value.dtype}, expected a floating-point tensor like the input")
    if torch.isnan(value).any():
        fail(item, f"{what} contains NaN at {int(torch.isnan(value).sum())} entries "
                   "(a division by a zero norm?)")
    return value.detach().to(like.dtype)


def unchanged(item: str, before: Tensor, after: Tensor, name: str) -> None:
    if not torch.equal(before, after):
        fail(item, f"your function modified its input `{name}` in place; work on a copy "
                   f"(e.g. `{name}.clone()`) or use out-of-place operations")


def in_box(item: str, x_adv: Tensor, lo: float = 0.0, hi: float = 1.0) -> None:
    bad = (x_adv < lo - 1e-6) | (x_adv > hi + 1e-6)
    if bad.any():
        fail(item, f"you forgot to clamp to [0, 1]: {int(bad.sum())} pixels lie outside, from "
                   f"{x_adv.min().item():.3f} to {x_adv.max().item():.3f}")


def in_linf_ball(item: str, x_adv: Tensor, x: Tensor, eps: float) -> None:
    excess = (x_adv - x).abs() - eps
    bad = excess > 1e-6
    if bad.any():
        fail(item, f"your perturbation exceeds eps={eps:g} at {int(bad.sum())} pixels by up to "
                   f"{excess.max().item():.3g}: project x_adv - x onto [-eps, eps]")


def in_l2_ball(item: str, x_adv: Tensor, x: Tensor, eps: float) -> None:
    norms = (x_adv - x).flatten(1).norm(dim=1)
    bad = norms > eps * (1 + 1e-5) + 1e-6
    if bad.any():
        fail(item, f"your perturbation's L2 norm exceeds eps={eps:g} for {int(bad.sum())} of {len(norms)} "
                   f"examples (up to {norms.max().item():.3g}): project each example's delta onto the "
                   "L2 ball, delta * min(1, eps / ||delta||_2)")


def close(item: str, got: Tensor, want: Tensor, *, atol: float = 1e-5, rtol: float = 1e-4,
           what: str = "your result", hint: str = "") -> None:
    diff = (got - want).abs()
    bad = diff > atol + rtol * want.abs()
    if bad.any():
        fail(item, f"mismatch in {what}: {int(bad.sum())} of {want.numel()} entries differ from the reference, "
                   f"by up to {diff.max().item():.3g}" + (f". {hint}" if hint else ""))


def matches(got: Tensor, want: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return got.shape == want.shape and bool(((got - want).abs() <= atol + rtol * want.abs()).all())


def scalar_loss(item: str, value: Any, requires_grad: bool) -> None:
    """A loss the caller trains on: a one-element tensor that carried an autograd graph
    (``requires_grad``: what the call's record says of the result before it left the call)."""
    if not isinstance(value, Tensor) or value.numel() != 1:
        fail(item, f"return the loss as a scalar tensor, got {type(value).__name__}"
                   f"{'' if not isinstance(value, Tensor) else ' of shape ' + str(tuple(value.shape))}")
    if not requires_grad:
        fail(item, "your loss is not differentiable (it has no autograd graph): do not detach it or "
                   "compute it under torch.no_grad()")


# ----------------------------------------------------------------------------------------------
