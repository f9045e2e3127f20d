"""Large-eps targeted attacks as generation (Tsipras et al. 2019, section 5)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .. import attacks
from .._checks import check_choice, check_images, check_labels, check_number, eval_mode

__all__ = ["GenerationResult", "targeted_generation", "Ensemble", "OPTIMISERS"]

OPTIMISERS = ("apgd", "pgd")


class GenerationResult(NamedTuple):
    """Images pushed towards target classes, and how a held-out judge sees them.

    Attributes:
        x_gen: (N, C, H, W) generated images.
        target: (N,) target classes.
        source_success: fraction the attacked model classifies as the target; well below 1 at a
            large eps means the optimiser stalled on this model (e.g. gradient masking), and the
            judge's verdict then says nothing about what the model "draws".
        judge_agreement: fraction the held-out judge model classifies as the target.
        reached: (N,) bool, the attacked model classifies ``x_gen`` as the target.
        judged: (N,) bool, the judge classifies ``x_gen`` as the target.
    """

    x_gen: Tensor
    target: Tensor
    source_success: float
    judge_agreement: float
    reached: Tensor
    judged: Tensor


class Ensemble(nn.Module):
    """A judge made of several classifiers: the logarithm of their mean softmax.

    An ensemble of independently trained models of different architectures is harder to fool
    by transfer than any one of them: a perturbation made against one model must move them all.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) == 0:
            raise ValueError("Ensemble needs at least one member model, got none")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-30).log()


def targeted_generation(model: nn.Module, judge: nn.Module, x: Tensor, target: Tensor, *, eps: float,
                        steps: int = 100, norm: str = "l2", optimiser: str = "apgd", restarts: int = 1,
                        alpha: float | None = None,
                        generator: torch.Generator | None = None) -> GenerationResult:
    """A large-eps targeted attack towards ``target``, judged by a model that was not attacked.

    Tsipras et al. (§5) observe that for a robust model such attacks produce images that look
    like the target class; for a standard model they stay noise on the original digit. The
    held-out ``judge``'s agreement with the target measures it, provided the judge is not
    fooled by *transfer*: check it on the images generated against a standard model, which a
    human would not call the target (a standard model of another architecture is fooled by
    most of them; see the interpretability chapter).

    Args:
        model: the attacked model.
        judge: an independently trained classifier (not ``model``), e.g. an :class:`Ensemble`.
        x: starting images, (N, C, H, W), in [0, 1].
        target: (N,) int64 target classes.
        eps: radius (large: e.g. L2 4-8 on MNIST).
        steps: iterations per restart.
        norm: "l2" or "linf".
        optimiser: ``"apgd"`` (default: the attack suite's APGD with a step size that adapts per
            example, starting at ``x``, maximising the target's log-probability and keeping the
            best point; see :func:`robustlab.attacks.apgd`) or ``"pgd"`` (fixed step ``alpha``,
            Tsipras et al.'s choice).
        restarts: APGD restarts; the first starts at ``x``, later ones at random points of the
            ball (``"pgd"``: must be 1).
        alpha: PGD's step size (default 2.5 * eps / steps); not used by APGD.
        generator: random source of APGD's later restarts.
    """
    optimiser = check_choice(optimiser, "optimiser", OPTIMISERS)
    check_images(x)
    check_labels(target, x, "target")
    check_number(restarts, "restarts", low=1, integer=True)
    check_number(steps, "steps", low=1, integer=True)
    check_number(eps, "eps", low=0.0)
    if optimiser == "pgd":
        if restarts != 1:
            raise ValueError(f"restarts applies to optimiser='apgd' only, got restarts={restarts} with 'pgd'")
        alpha = 2.5 * eps / steps if alpha is None else alpha
        x_gen = attacks.pgd(model, x, target, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=True,
                            random_start=False, generator=generator)
    else:
        if alpha is not None:
            raise ValueError("alpha is PGD's step size; APGD adapts its own, so pass alpha only with "
                             "optimiser='pgd'")
        with torch.no_grad(), eval_mode(model):
            y_pred = model(x).argmax(dim=1)  # APGD's "true" label only matters to its DLR loss
        x_gen = attacks.apgd(model, x, y_pred, eps=eps, norm=norm, steps=steps, loss="ce", target=target,
                             random_start=False, generator=generator)
        for _ in range(restarts - 1):
            x_try = attacks.apgd(model, x, y_pred, eps=eps, norm=norm, steps=steps, loss="ce", target=target,
                                 random_start=True, generator=generator)
            with torch.no_grad(), eval_mode(model):
                lp = lambda z: model(z).log_softmax(1).gather(1, target[:, None]).squeeze(1)  # noqa: E731
                better = lp(x_try) > lp(x_gen)
            x_gen[better] = x_try[better]
    with torch.no_grad(), eval_mode(model), eval_mode(judge):
        reached = model(x_gen).argmax(1) == target
        judged = judge(x_gen).argmax(1) == target
    return GenerationResult(x_gen, target, float(reached.float().mean()), float(judged.float().mean()),
                            reached, judged)
