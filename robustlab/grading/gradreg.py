"""Checks of the gradient-regularisation assignment: the double-backpropagation loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .compare import fail, matches, scalar_loss, unchanged
from .inputs import cnn, digits, mlp
from .runners import Runner


def _check_gradreg_loss(run: Runner, hidden: bool) -> int:
    from ..train import TrainConfig, training_loss

    settings = [(cnn(7), 16, 0.5)] + ([(mlp(8), 9, 3.0), (cnn(9), 1, 0.0)] if hidden else [])
    for i, (model, n, lam) in enumerate(settings):
        model.train()
        x, y = digits(n, 80 + i)
        x0 = x.clone()
        model.zero_grad()
        got = run(model, x, y, lam, backward=True)
        unchanged(run.item, x0, x, "x")
        scalar_loss(run.item, got, run.last.requires_grad)
        if run.last.backward_error:
            fail(run.item, f"backpropagating through your loss fails ({run.last.backward_error}). The penalty "
                          "must be trained through (double backpropagation): compute the input gradient with "
                          "torch.autograd.grad(..., create_graph=True)")
        got_grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        model.zero_grad()
        want, _ = training_loss(model, x, y, TrainConfig(method="gradreg", lam=lam))
        want.backward()
        want_grads = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad()
        ce = F.cross_entropy(model(x), y).item()
        x_in = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
        norms = g.flatten(1).norm(dim=1)
        if not math.isclose(got.item(), want.item(), rel_tol=1e-4, abs_tol=1e-6):
            penalty_got, penalty_want = got.item() - ce, want.item() - ce
            hint = ""
            if lam > 0 and math.isclose(penalty_got, penalty_want / n ** 2, rel_tol=1e-3):
                hint = (" Your penalty is 1/N^2 of the expected one: take the gradient of the SUM of the "
                        "per-example losses (each example's own input gradient), not of their mean.")
            elif lam > 0 and math.isclose(penalty_got, lam * norms.mean().item(), rel_tol=1e-3):
                hint = " Your penalty uses the L2 norm of the input gradient; use its SQUARE."
            elif lam > 0 and math.isclose(penalty_got, 0.0, abs_tol=1e-9):
                hint = " Your penalty is zero: add lam times the mean squared L2 norm of the input gradients."
            fail(run.item, f"loss {got.item():.6f}, expected {want.item():.6f} (cross-entropy {ce:.6f} plus "
                           f"penalty {penalty_want:.6f}).{hint}")
        agree = all(matches(a, b, atol=1e-6, rtol=1e-3) for a, b in zip(got_grads, want_grads))
        if not agree and lam > 0:
            fail(run.item, "the value is right but its gradient with respect to the parameters is not: the "
                           "penalty must be trained through (double backpropagation). Compute the input "
                           "gradient with torch.autograd.grad(..., create_graph=True)")
    return len(settings)
