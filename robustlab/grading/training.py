"""Checks of the training assignment: one PGD-AT epoch, clean and robust accuracy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .compare import close, fail, matches
from .inputs import digits, mlp, zoo_model
from .runners import Runner


def _check_pgd_at_epoch(run: Runner, hidden: bool) -> int:
    from ..attacks import pgd

    def reference(model, batches, optimizer, eps, alpha, steps, adversarial=True, zero_grad=True):
        losses = []
        for xb, yb in batches:
            x_in = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, random_start=False) if adversarial else xb
            model.train()
            if zero_grad:
                optimizer.zero_grad()
            loss = F.cross_entropy(model(x_in), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)

    settings = [(0, 0.3, 0.1, 3)] + ([(1, 0.1, 0.05, 2)] if hidden else [])
    for seed, eps, alpha, steps in settings:
        x, y = digits(48, 40 + seed)
        batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
        results = {}
        for who in ("student", "reference", "clean", "accumulating"):
            model = mlp(seed).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            if who == "student":
                loss = run(model, batches, optimizer, eps=eps, alpha=alpha, steps=steps)
            else:
                torch.manual_seed(0)
                loss = reference(model, batches, optimizer, eps, alpha, steps, adversarial=who != "clean",
                                 zero_grad=who != "accumulating")
            results[who] = (loss, torch.cat([p.detach().flatten() for p in model.parameters()]))
        (loss, params), (ref_loss, ref_params), (_, clean_params) = (
            results["student"], results["reference"], results["clean"])
        initial = torch.cat([p.detach().flatten() for p in mlp(seed).parameters()])
        if torch.equal(params, initial):
            fail(run.item, "the model's weights did not change: call loss.backward() and optimizer.step() "
                           "for every batch")
        if matches(params, clean_params, atol=1e-5, rtol=1e-4):
            fail(run.item, "you trained on the clean images; PGD-AT trains on the adversarial ones, "
                           "x_adv = robustlab.pgd(model, x, y, ...), for every batch")
        if matches(params, results["accumulating"][1], atol=1e-5, rtol=1e-4):
            fail(run.item, "you forgot optimizer.zero_grad(): the gradients of all earlier batches were added "
                           "to each step")
        close(run.item, params, ref_params, atol=1e-5, rtol=1e-3, what="the weights after your epoch",
              hint="Per batch: x_adv from robustlab.pgd(..., random_start=False), then model.train(), "
                   "optimizer.zero_grad(), the mean cross-entropy on x_adv, backward, optimizer.step()")
        if not isinstance(loss, (float, int)) and not (isinstance(loss, Tensor) and loss.numel() == 1):
            fail(run.item, f"return the mean training loss as a float, got {type(loss).__name__}")
        if not math.isclose(float(loss), ref_loss, rel_tol=1e-3, abs_tol=1e-5):
            fail(run.item, f"you returned {float(loss):.5f}; the mean of the batch losses is {ref_loss:.5f}")
    return len(settings)


def _check_evaluate(run: Runner, hidden: bool) -> int:
    from ..attacks import pgd

    settings = [(zoo_model("mnist-pgd-linf-0.3"), 64, 0.3, 0.05, 10, True)]
    if hidden:
        settings += [(mlp(5, dropout=0.5), 40, 0.1, 0.03, 5, True),
                     (zoo_model("mnist-standard"), 50, 0.1, 0.025, 10, False)]
    for i, (model, n, eps, alpha, steps, start_in_train) in enumerate(settings):
        x, y = digits(n, 60 + i)
        model.eval()
        x_adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
        if start_in_train:
            model.train()
        got = run(model, x, y, eps=eps, alpha=alpha, steps=steps)
        training_calls = run.observed(model).training_calls
        if training_calls:
            fail(run.item, f"you ran the model in training mode ({training_calls} forward passes; dropout "
                          "and batch norm then behave differently): call model.eval() before evaluating")
        if not (isinstance(got, tuple) and len(got) == 2):
            fail(run.item, f"return a pair (clean_accuracy, robust_accuracy), got {got!r}")
        got = tuple(float(v) for v in got)
        if any(v > 1 for v in got):
            fail(run.item, f"you returned {got}: accuracies are fractions in [0, 1], not counts or percentages")
        if not math.isclose(got[0], clean, abs_tol=1e-6):
            fail(run.item, f"clean accuracy {got[0]:.4f}, expected {clean:.4f}")
        if math.isclose(got[1], clean, abs_tol=1e-6) and not math.isclose(robust, clean, abs_tol=1e-6):
            fail(run.item, "your robust accuracy equals the clean accuracy: classify the adversarial examples")
        if not math.isclose(got[1], robust, abs_tol=1e-6):
            fail(run.item, f"robust accuracy {got[1]:.4f}, expected {robust:.4f} (PGD with random_start=False, "
                           "the share of adversarial examples still classified correctly)")
    return len(settings)
