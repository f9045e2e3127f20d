"""Auto-PGD (Croce & Hein, 2020): PGD with momentum and a step size that adapts per example.

APGD needs no step size: it starts at ``2 * eps`` and halves it, per example, at a schedule of
checkpoints whenever too few of the last steps increased the loss or neither the step size nor
the best loss changed since the previous checkpoint; after halving, the example restarts from
the best point found so far. With the DLR loss (scale-invariant) and its targeted version over
the most likely wrong classes (APGD-T) it is the gradient half of AutoAttack.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_flag,
    check_generator,
    check_images,
    check_labels,
    check_logits,
    check_number,
    eval_mode,
)
from ._geometry import NORMS, Geometry, geometry
from ._loss import dlr_loss, targeted_dlr_loss

__all__ = ["apgd", "APGD_LOSSES", "checkpoints"]

APGD_LOSSES = ("ce", "dlr")

_MOMENTUM = 0.75  # weight of the new gradient step against the previous move (Croce & Hein's alpha)
_RHO = 0.75  # a checkpoint halves the step unless at least this share of its steps raised the loss


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step size, increasing, all <= ``steps``.

    Fractions ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``
    of the budget: checkpoints start far apart and come closer as the attack converges.
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    return sorted({math.ceil(round(q * steps, 9)) for q in p[1:]} - {0})  # round: 0.57 * 100 is 57.000000001


def _run(model: nn.Module, x: Tensor, y: Tensor, start: Tensor, *, eps: float, geo: Geometry,
         steps: int, objective: Callable[[Tensor], Tensor],
         keep_best: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run from ``start``; returns ``(x_adv, fooled, best objective)`` per example.

    ``x_adv`` is a misclassified iterate where one was found (``fooled``), else the iterate of
    highest objective; with ``keep_best`` always the iterate of highest objective.
    """
    n = x.shape[0]

    def value_and_grad(point: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_in = point.detach().requires_grad_(True)
        logits = model(x_in)
        obj = objective(logits)  # (N,)
        (grad,) = torch.autograd.grad(obj.sum(), x_in)
        return obj.detach(), grad, (logits.detach().argmax(dim=1) != y)

    def rows(mask: Tensor) -> Tensor:  # (N,) -> (N, 1, 1, 1)
        return mask.view(-1, *([1] * (x.dim() - 1)))

    project = geo.projector(x, eps)
    x_k = start
    obj_k, grad_k, wrong = value_and_grad(x_k)
    fooled = wrong.clone()
    # Buffers the loop updates in place (fewer large allocations: on the CPU they cost page faults).
    x_fool = torch.where(rows(wrong), x_k, x)
    x_best, obj_best, grad_best = x_k.clone(), obj_k, grad_k.clone()
    x_prev = x_k
    eta = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)
    marks = set(checkpoints(steps))
    last_mark, increases = 0, torch.zeros(n, device=x.device)
    eta_at_mark, best_at_mark = eta.clone(), obj_best.clone()
    obj_prev = obj_k
    for k in range(steps):
        z = project(geo.step(x_k, grad_k, eta))
        if k == 0:
            x_new = z
        else:  # momentum: x_k + m (z - x_k) + (1 - m)(x_k - x_prev) = m z + 2 (1 - m) x_k - (1 - m) x_prev
            x_new = project(z.mul_(_MOMENTUM).add_(x_k, alpha=2.0 * (1.0 - _MOMENTUM))
                            .sub_(x_prev, alpha=1.0 - _MOMENTUM))
        x_prev, x_k = x_k, x_new
        obj_k, grad_k, wrong = value_and_grad(x_k)
        torch.where(rows(wrong), x_k, x_fool, out=x_fool)
        fooled |= wrong
        increases += obj_k > obj_prev
        obj_prev = obj_k
        better = obj_k > obj_best
        torch.where(rows(better), x_k, x_best, out=x_best)
        torch.where(rows(better), grad_k, grad_best, out=grad_best)
        obj_best = torch.where(better, obj_k, obj_best)
        if k + 1 in marks:
            too_few = increases < _RHO * (k + 1 - last_mark)
            stalled = (eta == eta_at_mark) & (obj_best <= best_at_mark)
            halve = too_few | stalled
            eta = torch.where(halve, eta / 2.0, eta)
            # Restart the halved examples from their best point, without momentum.
            x_k = torch.where(rows(halve), x_best, x_k)
            x_prev = torch.where(rows(halve), x_best, x_prev)
            grad_k = torch.where(rows(halve), grad_best, grad_k)
            last_mark, increases = k + 1, torch.zeros_like(increases)
            eta_at_mark, best_at_mark = eta.clone(), obj_best.clone()
    if keep_best:
        return x_best, fooled, obj_best
    return torch.where(rows(fooled), x_fool, x_best), fooled, obj_best


def apgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", steps: int = 100,
         loss: str = "ce", targeted: bool = False, n_target_classes: int = 9, restarts: int = 1,
         target: Tensor | None = None, random_start: bool = True,
         generator: torch.Generator | None = None) -> Tensor:
    """Auto-PGD (Croce & Hein, 2020) in the Linf or L2 ball: APGD-CE, APGD-DLR and APGD-T.

    Each run starts uniformly at random in the eps-ball (at ``x`` with ``random_start=False``),
    steps with momentum and halves its step size per example at the checkpoints of
    :func:`checkpoints`, restarting from the best point. An example already misclassified at ``x``
    is returned unchanged; later restarts (and targets) only attack the examples not yet fooled.
    Per example the result is a misclassified point where one was found, else the point of
    highest loss of the last run.

    With ``targeted=True`` this is APGD-T: ``y`` are still the *true* labels, and the attack
    runs once per target class, taking as targets the ``n_target_classes`` classes the model
    ranks highest after the true one on ``x``, with the targeted DLR loss (``loss="dlr"``) or the
    cross-entropy towards the target (``loss="ce"``).

    With ``target`` given (one class per example) the attack is a targeted *optimiser* rather
    than a search for any misclassification: every example is attacked for the whole budget
    towards its own target (``loss="ce"``: the target's log-probability; ``"dlr"``: the targeted
    DLR loss against the true class ``y``), and the result is the point of highest objective
    over all steps and restarts, whether or not the model already predicts the target there.
    This is the optimiser of large-eps targeted generation (Tsipras et al. 2019, section 5).

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: true labels, (N,) int64.
        eps: radius of the threat model in pixel units, e.g. 0.3 (Linf) or 2.0 (L2) on MNIST.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (and per target), >= 1; 100 in AutoAttack.
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (difference of logits ratio; needs K >= 3,
            K >= 4 when targeted).
        targeted: run APGD-T over the top ``n_target_classes`` wrong classes.
        n_target_classes: number of target classes for APGD-T, 1 <= n_target_classes <= K - 1.
        restarts: random restarts per run (per target when targeted), >= 1.
        target: optional (N,) int64 target class per example (see above); not with
            ``targeted=True``.
        random_start: start uniformly at random in the eps-ball (AutoAttack's choice); False
            starts every run at ``x`` (with ``target``, e.g. for generation, where a start
            anywhere in a large ball would be visible noise).
        generator: random source for the starts; the same state gives the same result.

    Returns:
        x_adv, same shape, dtype and device as x: ``||x_adv - x||_norm <= eps`` per example,
        values in [0, 1].
    """
    norm = check_choice(norm, "norm", NORMS)
    loss = check_choice(loss, "loss", APGD_LOSSES)
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_number(steps, "steps", low=1, integer=True)
    check_number(restarts, "restarts", low=1, integer=True)
    check_number(n_target_classes, "n_target_classes", low=1, integer=True)
    check_flag(targeted, "targeted")
    check_flag(random_start, "random_start")
    if not random_start and restarts > 1:
        raise ValueError(f"restarts={restarts} with random_start=False would repeat one deterministic run; "
                         f"use restarts=1 or random_start=True")
    check_generator(generator, x)
    if target is not None:
        if targeted:
            raise ValueError("target= gives each example its own target class, while targeted=True lets APGD-T "
                             "choose the targets itself; pass one of them, not both")
        check_labels(target, x, "target")
        if loss == "dlr" and bool((target == y).any()):
            raise ValueError(f"target equals the true label y for {int((target == y).sum())} example(s); the "
                             f"targeted DLR loss needs target != y (use loss='ce' to maximise a class's own "
                             f"probability)")
    geo = geometry(norm)
    x = x.detach()
    n = x.shape[0]
    if n == 0:
        return x.clone()
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)
        check_logits(logits, y, n)
        k = logits.shape[1]
        need = 4 if (targeted or target is not None) and loss == "dlr" else 3 if loss == "dlr" else 2
        if k < need:
            raise ValueError(f"loss={loss!r}{' (targeted)' if targeted else ''} needs a model with at "
                             f"least {need} classes, got {k}; use loss='ce'")
        if targeted and n_target_classes > k - 1:
            raise ValueError(f"n_target_classes must be <= K - 1 = {k - 1} for this {k}-class model, "
                             f"got {n_target_classes}")
        if target is not None:
            if target.numel() and int(target.max()) >= k:
                raise ValueError(f"target classes must be < the model's {k} classes, got max target "
                                 f"{int(target.max())}; pass class indices in [0, {k - 1}]")
            return _towards(model, x, y, target, eps=eps, geo=geo, steps=steps, loss=loss, restarts=restarts,
                            random_start=random_start, generator=generator)
        runs = n_target_classes if targeted else 1
        # One random draw for every run, example-major: batch-invariant on the CPU.
        starts = geo.random_start(x, eps, restarts=runs * restarts, generator=generator)
        if not random_start:
            starts.zero_()
        order = logits.argsort(dim=1, descending=True)  # (N, K): the targets of APGD-T
        x_adv = x.clone()
        robust = logits.argmax(dim=1) == y  # (N,)
        for t in range(runs):
            if targeted:
                # The (t+1)-th most likely class other than the true one.
                rank = (order == y[:, None]).long().argmax(dim=1)  # position of y in the ranking
                pos = t + (rank <= t).long()
                target = order.gather(1, pos[:, None]).squeeze(1)
            for r in range(restarts):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() == 0:
                    return x_adv
                xi, yi = x[idx], y[idx]
                if targeted:
                    ti = target[idx]
                    objective = (lambda z, yi=yi, ti=ti: targeted_dlr_loss(z, yi, ti)) if loss == "dlr" \
                        else (lambda z, ti=ti: -F.cross_entropy(z, ti, reduction="none"))
                else:
                    objective = (lambda z, yi=yi: dlr_loss(z, yi)) if loss == "dlr" \
                        else (lambda z, yi=yi: F.cross_entropy(z, yi, reduction="none"))
                start = (xi + starts[idx, t * restarts + r]).clamp(0.0, 1.0)
                found, fooled, _ = _run(model, xi, yi, start, eps=eps, geo=geo, steps=steps,
                                        objective=objective)
                x_adv[idx] = found
                robust[idx[fooled]] = False
    return x_adv


def _towards(model: nn.Module, x: Tensor, y: Tensor, target: Tensor, *, eps: float, geo: Geometry, steps: int,
             loss: str, restarts: int, random_start: bool, generator: torch.Generator | None) -> Tensor:
    """APGD towards a given target per example: the best point over all restarts (model in eval mode)."""
    if loss == "dlr":
        objective = lambda z: targeted_dlr_loss(z, y, target)  # noqa: E731
    else:
        objective = lambda z: -F.cross_entropy(z, target, reduction="none")  # noqa: E731
    starts = geo.random_start(x, eps, restarts=restarts, generator=generator)
    best_x, best_obj = x.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    for r in range(restarts):
        start = (x + starts[:, r]).clamp(0.0, 1.0) if random_start else x
        found, _, obj = _run(model, x, y, start, eps=eps, geo=geo, steps=steps, objective=objective,
                             keep_best=True)
        better = obj > best_obj
        best_x[better] = found[better]
        best_obj = torch.where(better, obj, best_obj)
    return best_x
