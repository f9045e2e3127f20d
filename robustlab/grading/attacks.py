"""Checks of the attacks assignment: FGSM, one PGD step in Linf and L2, and the whole PGD attack
(random start, restarts with the best run kept per example)."""

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
                  (mlp(3), torch.rand(8, 1, 28, 28, generator=gen(3)), torch.arange(8) % 10, 0.25),
                  (_blind_border(), *digits(8, 4), 0.2)]
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
        with torch.enable_grad():
            x_in = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_in), y), x_in)
        if (grad == 0).any() and matches(got, (x + eps * torch.where(grad >= 0, 1.0, -1.0)).clamp(0, 1)):
            fail(run.item, "where the gradient is exactly 0 the sign is 0 (torch.sign): leave those pixels "
                           "unchanged instead of moving them by +eps")
        mismatch = ((got - want).abs() > 1e-5).float().mean().item()
        if mismatch > 0.005:
            fail(run.item, f"x_adv differs from x + eps * sign(grad_x CE) clamped to [0, 1] at "
                           f"{100 * mismatch:.1f} % of the pixels (eps={eps:g}). Use the cross-entropy of the "
                           "model's logits and the sign of its input gradient")
    return len(cases)


def _blind_border():
    """A linear model that ignores a 4-pixel border: the loss gradient there is exactly 0."""
    from ..testing import LinearMulti

    weight = torch.randn(10, 1, 28, 28, generator=gen(5))
    weight[..., :4, :] = weight[..., -4:, :] = weight[..., :4] = weight[..., -4:] = 0.0
    return LinearMulti(weight, torch.zeros(10)).eval()


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


def _start_cases(hidden: bool) -> list[tuple[str, float]]:
    return [("linf", 0.3)] + ([("l2", 2.0)] if hidden else [])


def _check_random_start(run: Runner, norm: str, eps: float) -> None:
    """steps=0 returns the random start: uniform in the Linf box (each coordinate uniform in
    [-eps, eps], variance eps^2 / 3) or in the L2 ball (norms near eps in high dimension)."""
    model = mlp(30)
    x = 0.35 + 0.3 * torch.rand(64, 1, 28, 28, generator=gen(31))  # no clamping to [0, 1] within eps=0.3
    y = model(x).argmax(1)
    first = as_tensor(run.item, run(model, x, y, eps=eps, alpha=eps / 4, steps=0, restarts=1, norm=norm), x,
                      "x_adv")
    second = as_tensor(run.item, run(model, x, y, eps=eps, alpha=eps / 4, steps=0, restarts=1, norm=norm), x,
                       "x_adv")
    in_box(run.item, first)
    delta = first - x
    if torch.equal(first, x):
        fail(run.item, "with steps=0 your attack returned x itself: start at a random point of the eps-ball "
                       "(uniform in the Linf box, or in the L2 ball)")
    if torch.equal(first, second):
        fail(run.item, "two calls returned the same random start: draw a fresh start on every call (and for "
                       "every restart)")
    if norm == "linf":
        in_linf_ball(run.item, first, x, eps)
        spread = delta.square().mean().item() / eps ** 2
        if abs(spread - 1 / 3) > 0.02 or abs(delta.mean().item()) > 0.01 * eps:
            fail(run.item, f"your Linf random start has mean {delta.mean().item():+.3g} and mean square "
                           f"{spread:.3f} eps^2; uniform in [-eps, eps] per pixel has mean 0 and mean square "
                           "eps^2 / 3 (torch.empty_like(x).uniform_(-eps, eps))")
    else:
        in_l2_ball(run.item, first, x, eps)
        norms = delta.flatten(1).norm(dim=1)
        if norms.mean().item() < 0.95 * eps or abs(delta.mean().item()) > 0.01 * eps:
            fail(run.item, f"your L2 random start has mean norm {norms.mean().item():.3f} (eps={eps:g}); uniform "
                           "in the L2 ball of 784 dimensions lies almost surely near its surface: a Gaussian "
                           "direction, normalised, times eps * u^(1/d)")


def _check_best_restart(run: Runner) -> None:
    """With restarts, each example keeps its own highest-loss run (steps=0: the best of the
    random starts), not the last run and not the run that is best for the whole batch."""
    from .. import attacks
    from ..testing import LinearMulti

    g = gen(40)
    model = LinearMulti(torch.randn(10, 1, 8, 8, generator=g), torch.zeros(10)).eval()
    x = 0.35 + 0.3 * torch.rand(256, 1, 8, 8, generator=g)
    y = model(x).argmax(1)

    def loss(x_adv: Tensor) -> float:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(x_adv), y).item()

    best = loss(run.reference(attacks.pgd, model, x, y, eps=0.3, alpha=0.1, steps=0, restarts=8))
    got = as_tensor(run.item, run(model, x, y, eps=0.3, alpha=0.1, steps=0, restarts=8, norm="linf"), x, "x_adv")
    in_linf_ball(run.item, got, x, 0.3)
    single = loss(attacks.pgd(model, x, y, eps=0.3, alpha=0.1, steps=0, restarts=1))
    if loss(got) < 0.8 * best:
        fail(run.item, f"with 8 restarts (steps=0) the mean loss of your x_adv is {loss(got):.3f}; keeping, for "
                       f"each example, its highest-loss restart gives about {best:.3f} (one restart: "
                       f"{single:.3f}). Track the best x_adv per example, not the last run or the run best "
                       "for the whole batch")


def _check_pgd_attack(run: Runner, hidden: bool) -> int:
    from .. import attacks

    for norm, eps in _start_cases(hidden):
        _check_random_start(run, norm, eps)
    cases = [("linf", 0.1, 0.025, 20)] + ([("l2", 1.5, 0.25, 20)] if hidden else [])
    model = zoo_model("mnist-standard")
    x, y = digits(96, 41)
    for norm, eps, alpha, steps in cases:
        want = run.reference(attacks.pgd, model, x, y, eps=eps, alpha=alpha, steps=steps, restarts=1, norm=norm)
        x0, training = x.clone(), model.training
        got = run(model, x, y, eps=eps, alpha=alpha, steps=steps, restarts=1, norm=norm)
        unchanged(run.item, x0, x, "x")
        if model.training != training:
            fail(run.item, "your attack changed the model's mode (model.train()/eval()); leave it as given")
        got = as_tensor(run.item, got, x, "x_adv")
        if got.requires_grad:
            fail(run.item, "return x_adv without autograd history (.detach())")
        in_box(run.item, got)
        (in_linf_ball if norm == "linf" else in_l2_ball)(run.item, got, x, eps)
        seen = run.observed(model).distinct
        if seen < steps * len(x):
            fail(run.item, f"your model saw {seen} different inputs for {steps} steps on {len(x)} examples: take a "
                           "fresh gradient at every iterate")
        with torch.no_grad():
            mine, theirs = (model(z).argmax(1).eq(y).float().mean().item() for z in (got, want))
        # Two random starts differ a little: allow 8 points on 96 digits.
        if mine > theirs + 0.08:
            fail(run.item, f"{norm} eps={eps:g}, {steps} steps of alpha={alpha:g}: the model still classifies "
                           f"{100 * mine:.0f} % of your x_adv correctly, the reference attack leaves "
                           f"{100 * theirs:.0f} %. Ascend the loss (cross-entropy) with your PGD step at each "
                           "iterate and project after every step")
    if hidden:
        _check_best_restart(run)
    return len(_start_cases(hidden)) + len(cases) + int(hidden)
