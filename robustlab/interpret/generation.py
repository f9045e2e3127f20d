"""Large-eps targeted attacks as generation (Tsipras et al. 2019, section 5)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import attacks
from .._checks import eval_mode

__all__ = ["GenerationResult", "targeted_generation"]


class GenerationResult(NamedTuple):
    """Images pushed towards target classes, and how a held-out judge sees them.

    Attributes:
        x_gen: (N, C, H, W) generated images.
        target: (N,) target classes.
        source_success: fraction the attacked model classifies as the target.
        judge_agreement: fraction the held-out judge model classifies as the target.
    """

    x_gen: Tensor
    target: Tensor
    source_success: float
    judge_agreement: float


def targeted_generation(model: nn.Module, judge: nn.Module, x: Tensor, target: Tensor, *, eps: float,
                        steps: int = 100, norm: str = "l2", alpha: float | None = None,
                        generator: torch.Generator | None = None) -> GenerationResult:
    """A large-eps targeted PGD towards ``target``, judged by a model that was not attacked.

    Tsipras et al. (§5) observe that for a robust model such attacks produce images that look
    like the target class; for a standard model they stay noise on the original digit. The
    held-out ``judge``'s agreement with the target measures it.

    Args:
        model: the attacked model.
        judge: an independently trained classifier (not ``model``).
        x: starting images, (N, C, H, W), in [0, 1].
        target: (N,) int64 target classes.
        eps: radius (large: e.g. L2 4-8 on MNIST).
        steps: PGD steps.
        norm: "l2" or "linf".
        alpha: step size (default 2.5 * eps / steps).
        generator: random start.
    """
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_gen = attacks.pgd(model, x, target, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=True,
                        random_start=False, generator=generator)
    with torch.no_grad(), eval_mode(model), eval_mode(judge):
        success = float((model(x_gen).argmax(1) == target).float().mean())
        judged = float((judge(x_gen).argmax(1) == target).float().mean())
    return GenerationResult(x_gen, target, success, judged)
