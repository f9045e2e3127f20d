"""Checks for gradient masking: the signs that an attack's failure says more about the attack
than about the model (Athalye, Carlini & Wagner, 2018; Carlini et al., 2019).

Each check looks for one symptom and, when it sees it, issues a :class:`MaskingWarning` that
says what it saw and what to do. :func:`robustlab.evaluate.attack_suite` and
:func:`robustlab.evaluate.robust_accuracy` run them; they can be called on their own too.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import eval_mode

__all__ = ["MaskingWarning", "check_randomness", "check_zero_gradients", "check_unbounded",
           "check_single_step", "check_gradient_free", "unbounded_eps"]


def unbounded_eps(norm: str, x: Tensor) -> float:
    """A radius whose ball around any image of [0, 1]^d contains all of [0, 1]^d: 1 for Linf, the
    cube's diagonal sqrt(d) for L2 (28 on MNIST). Within it a correct attack fools any model."""
    return 1.0 if norm == "linf" else float(x[0].numel()) ** 0.5


class MaskingWarning(UserWarning):
    """A symptom of gradient masking: the robust accuracy may be overestimated."""


def _warn(message: str, stacklevel: int) -> None:
    warnings.warn(message, MaskingWarning, stacklevel=stacklevel + 1)


def check_randomness(model: nn.Module, x: Tensor, *, stacklevel: int = 2) -> bool:
    """Warns if two identical calls of the model on ``x`` give different outputs; returns True then."""
    with torch.no_grad(), eval_mode(model):
        a, b = model(x), model(x)
    if torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        return False
    _warn("the model's output changed between two identical calls on the same inputs (in eval "
          "mode): it is randomised, and an attack on a random model must attack its expectation "
          "(EOT, Athalye et al. 2018), not one draw; average the gradients over many draws",
          stacklevel)
    return True


def check_zero_gradients(model: nn.Module, x: Tensor, y: Tensor, *, threshold: float = 0.05,
                         stacklevel: int = 2) -> float:
    """Warns if the input gradient of the cross-entropy is exactly zero for more than
    ``threshold`` of the examples; returns that share."""
    if x.shape[0] == 0:
        return 0.0
    with eval_mode(model):
        x_in = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_in), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_in)
    share = float((grad.flatten(1).abs().amax(dim=1) == 0).float().mean())
    if share > threshold:
        _warn(f"the input gradient is exactly zero for {100 * share:.0f} % of the examples: the "
              f"model (a saturated softmax, a quantising or thresholding layer) hides its gradient, "
              f"so gradient attacks cannot start; try a gradient-free attack (robustlab.attacks."
              f"square) or the DLR loss", stacklevel)
    return share


def check_unbounded(model: nn.Module, x: Tensor, y: Tensor, *, norm: str, steps: int = 20,
                    threshold: float = 0.1, generator: torch.Generator | None = None,
                    stacklevel: int = 2) -> float:
    """Warns if APGD-CE at an eps that allows any image leaves more than ``threshold`` of the
    examples correctly classified; returns that accuracy."""
    from .attacks import apgd

    if x.shape[0] == 0:
        return 0.0
    eps = unbounded_eps(norm, x)
    x_adv = apgd(model, x, y, eps=eps, norm=norm, steps=steps, generator=generator)
    with torch.no_grad(), eval_mode(model):
        acc = float((model(x_adv).argmax(dim=1) == y).float().mean())
    if acc > threshold:
        _warn(f"at eps={eps:g} ({norm}), where the attacker may draw any image, {100 * acc:.0f} % of "
              f"the examples were still classified correctly: the attack is not working (gradient "
              f"masking or a bug), so its accuracy at the real eps means little; check the "
              f"gradients, or use a gradient-free attack", stacklevel)
    return acc


def check_single_step(single: str, multi: str, n_single_only: int, n: int, *, stacklevel: int = 2) -> None:
    """Warns that a single-step attack broke ``n_single_only`` of ``n`` examples that a
    multi-step attack could not."""
    if n_single_only > 0:
        _warn(f"{single} broke {n_single_only} of {n} examples that {multi} could not: a single step "
              f"beating many is the mark of a masked, locally misleading gradient (Athalye et al. "
              f"2018); the multi-step attack's accuracy overestimates robustness", stacklevel)


def check_gradient_free(n_gradient_free: int, n_left: int, *, threshold: float = 0.01,
                        stacklevel: int = 2) -> None:
    """Warns when a gradient-free attack broke more than ``threshold`` of the ``n_left``
    examples the gradient attacks left standing (and at least one)."""
    if n_gradient_free > 0 and n_gradient_free > threshold * n_left:
        _warn(f"the gradient-free Square attack broke {n_gradient_free} of the {n_left} examples "
              f"that every gradient attack missed: the gradients mislead (gradient masking), so "
              f"report the suite's worst case, never a gradient attack's accuracy alone", stacklevel)
