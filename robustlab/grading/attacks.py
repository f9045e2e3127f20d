"""Checks of the attacks assignment: FGSM and one PGD step in Linf and L2."""

from __future__ import annotations

import torch
from torch import Tensor

from .compare import as_tensor, close, fail, in_box, in_l2_ball, in_linf_ball, matches, unchanged
from .inputs import cnn, digits, gen, mlp, zoo_model
from .runners import Runner


def _check_fgsm(run: Runner, hidden: bool) -> int:
    from .. import attacks

    cases = [(cnn(0), *digits(16, 0), 0.3)]
    if hidden:
        cases += [(zoo_model("mnist-standard"), *digits(32, 1), 0.1), (mlp(2), *digits(8, 2), 0.0),
                  (mlp(3), torch.rand(8, 1, 28, 28, generator=gen(3)), torch.arange(8) % 10, 0.25)]
    for model, x, y, eps in cases:
        x0, training = x.clone(), model.training
        got = run(model, x, y, eps)
        unchanged(run.item, x0, x, "x")
        got = as_tensor(run.item, got, x, "x_adv")
        if model.training != training:
            fail(run.item, "your function changed the model's mode (model.train()/eval()); leave it as given")
        want = attacks.fgsm(model, x, y, eps=eps)
        if matches(got, want):
            continue
        in_box(run.item, got)
        in_linf_ball(run.item, got, x, eps)
        if eps > 0 and torch.equal(got, x):
            fail(run.item, "x_adv equals x: no perturbation. Take the gradient of the loss with respect "
                           "to the input x (x.requires_grad_(True)), not the model's parameters")
        if eps > 0 and matches(got, attacks.fgsm(model, x, y, eps=eps, targeted=True)):
            fail(run.item, "your step goes down the loss (x - eps * sign(grad)); FGSM adds eps * sign(grad) "
                           "to increase the loss of the true labels")
        mismatch = ((got - want).abs() > 1e-5).float().mean().item()
        if mismatch > 0.005:
            fail(run.item, f"x_adv differs from x + eps * sign(grad_x CE) clamped to [0, 1] at "
                           f"{100 * mismatch:.1f} % of the pixels (eps={eps:g}). Use the cross-entropy of the "
                           "model's logits and the sign of its input gradient")
    return len(cases)


def _step_cases(hidden: bool, norm: str) -> list[tuple[Tensor, Tensor, Tensor, float, float]]:
    g = gen(10 if norm == "linf" else 20)
    cases = []
    shapes = [(4, 1, 6, 6)] + ([(8, 3, 5, 5), (2, 1, 28, 28)] if hidden else [])
    for i, shape in enumerate(shapes):
        eps = {"linf": 0.3, "l2": 1.0}[norm] / (1 + i)
        alpha = eps / 4
        x = torch.rand(shape, generator=g)
        if norm == "linf":
            x_adv = (x + eps * (2 * torch.rand(shape, generator=g) - 1)).clamp(0, 1)
        else:
            d = torch.randn(shape, generator=g)
            d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.rand(shape[0], 1, 1, 1, generator=g)
            x_adv = (x + d).clamp(0, 1)
        grad = torch.randn(shape, generator=g)
        if hidden:
            grad[0].zero_()  # a flat loss: the step must leave this example where it is
            grad.view(-1)[1::7] = 0.0
        cases.append((x_adv, x, grad, alpha, eps))
    if hidden and norm == "l2":  # a large step that must be projected back
        x_adv, x, grad, alpha, eps = cases[0]
        cases.append((x_adv, x, grad, 4 * eps, eps))
    return cases


def _check_step(run: Runner, hidden: bool, norm: str) -> int:
    from .. import attacks

    cases = _step_cases(hidden, norm)
    for x_adv, x, grad, alpha, eps in cases:
        copies = [t.clone() for t in (x_adv, x, grad)]
        got = run(x_adv, x, grad, alpha, eps)
        for before, after, name in zip(copies, (x_adv, x, grad), ("x_adv", "x", "grad")):
            unchanged(run.item, before, after, name)
        got = as_tensor(run.item, got, x, "the new x_adv")
        box = ((x - eps).clamp_min(0), (x + eps).clamp_max(1)) if norm == "linf" else None
        want = attacks.pgd_step(x_adv, x, grad, alpha=alpha, eps=eps, norm=norm)
        if matches(got, want):
            continue
        flipped = attacks.pgd_step(x_adv, x, -grad, alpha=alpha, eps=eps, norm=norm)
        if matches(got, flipped):
            fail(run.item, "your step goes down the loss: move along +grad (gradient ascent)")
        in_box(run.item, got)
        if norm == "linf":
            in_linf_ball(run.item, got, x, eps)
            raw = torch.maximum(torch.minimum(x_adv + alpha * grad, box[1]), box[0])
            if matches(got, raw):
                fail(run.item, "you stepped along the raw gradient; the Linf step is alpha * sign(grad)")
            close(run.item, got, want, what="the new x_adv",
                  hint="Expected clamp(x_adv + alpha * sign(grad), x - eps, x + eps), then clamp to [0, 1]")
        else:
            in_l2_ball(run.item, got, x, eps)
            def projected(move: Tensor) -> Tensor:  # x_adv + move, projected and clamped as required
                delta = x_adv + move - x
                d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                return (x + delta * (eps / d_norm).clamp(max=1.0)).clamp(0.0, 1.0)

            if matches(got, projected(alpha * grad)):
                fail(run.item, "your step is alpha * grad, not normalised: the L2 step is "
                               "alpha * grad / ||grad||_2 per example, so it has length alpha")
            if matches(got, projected(alpha * grad / grad.norm().clamp_min(1e-12))):
                fail(run.item, "you normalised by the norm of the whole batch; normalise each example's "
                               "gradient by its own L2 norm (over the C, H, W dimensions)")
            close(run.item, got, want, what="the new x_adv",
                  hint="Expected x_adv + alpha * grad / ||grad||_2 per example, then the projection "
                       "delta * min(1, eps / ||delta||_2) of delta = x_adv - x, then clamp to [0, 1]")
    return len(cases)
