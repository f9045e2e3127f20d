"""Checks for the course's nbgrader exercises: a student's function against the reference.

Each graded item of ``exercises/`` is checked by one call in its test cell::

    from robustlab import grading
    grading.check("fgsm", fgsm)               # visible: a first check
    ### BEGIN HIDDEN TESTS
    grading.check("fgsm", fgsm, hidden=True)  # randomised and edge cases
    ### END HIDDEN TESTS

``check`` calls the student's function on analytic and random inputs, compares the result with
``robustlab``'s reference implementation and raises :class:`Feedback` (an ``AssertionError``)
with a message the student can act on ("your perturbation exceeds eps=0.3 at 37 pixels by up
to 0.05: project ...") when something is wrong; nbgrader then gives the item zero points.

Fairness rules, enforced for every call of the student's function:

- **No delegation**: a call into the reference implementation (``robustlab``'s module for that
  topic, this module) or into a peer library (torchattacks, captum, ART, foolbox) from inside
  the student's function, whether direct, through an alias, a wrapper or an import inside the
  function, fails the item with a message. It is detected at run time (``sys.setprofile``), so
  it does not depend on how the call is spelled.
- **Time limit**: each call gets ``TIME_LIMIT`` seconds; an infinite loop fails only that item.
- **Warnings are not errors**: a warning raised by correct code is shown on stdout (nbgrader
  scores a test cell that writes to stderr as failed), never scored.
- **Deterministic**: the global random generators are seeded before each call, so grading the
  same submission twice gives the same result.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import signal
import sys
import threading
import warnings
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import beta as beta_dist
from scipy.stats import norm as normal
from torch import Tensor, nn

__all__ = ["Feedback", "check", "ITEMS", "TIME_LIMIT", "fresh"]

# Seconds one call of a student's function may take (the slowest item, a PGD-AT epoch on 48
# digits, takes about 1 s with the reference on a 2-core CPU); instructors may change it with
# the environment variable ROBUSTLAB_GRADING_TIME_LIMIT.
TIME_LIMIT = float(os.environ.get("ROBUSTLAB_GRADING_TIME_LIMIT", "30"))

# Peer libraries that implement the same algorithms: delegating to them is not allowed either.
PEER_PACKAGES = ("torchattacks", "captum", "art", "foolbox", "advertorch")


class Feedback(AssertionError):
    """A failed check, with the message a student should read."""


class ItemTimeout(Exception):
    """Raised inside the student's code when it runs past the time limit."""


def fresh() -> ModuleType:
    """This module reloaded from disk: hidden tests use it, so that a submission which
    replaced ``grading.check`` (or anything else in it) is graded by the real checks."""
    return importlib.reload(sys.modules[__name__])


# ----------------------------------------------------------------------------------------------
# Running the student's function: delegation monitor, time limit, seeding, warnings


def _files_of(module_names: tuple[str, ...]) -> frozenset[str]:
    """The resolved source files of the modules; a package counts with every file in it."""
    files = set()
    for name in module_names:
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):  # a package: all of its modules, subpackages included
            for folder in module.__path__:
                for root, _, names in os.walk(folder):
                    files.update(os.path.realpath(os.path.join(root, f)) for f in names if f.endswith(".py"))
        else:
            files.add(os.path.realpath(module.__file__))
    return frozenset(files)


@functools.lru_cache(maxsize=None)
def _origin(filename: str) -> tuple[str, str | None]:
    """A code object's file, resolved, and the peer package it belongs to (if any). Cached: the
    profile hook asks for every Python call the student's function makes."""
    real = os.path.realpath(filename)
    parts = real.split(os.sep)
    for pkg in PEER_PACKAGES:
        if pkg in parts and "site-packages" in parts[:parts.index(pkg)]:
            return real, pkg
    return real, None


class _Delegation:
    """Records calls into forbidden code while active (a profile hook on this thread)."""

    def __init__(self, files: frozenset[str]):
        self.files = files
        self.seen: list[str] = []
        self.tampered = False

    def _forbidden(self, code) -> str | None:
        real, peer = _origin(code.co_filename)
        if real in self.files:
            return f"robustlab.{os.path.basename(real)[:-3]}.{code.co_name}"
        return peer

    def hook(self, frame, event, arg):
        if event == "call":
            name = self._forbidden(frame.f_code)
            if name is not None and name not in self.seen:
                self.seen.append(name)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        previous = sys.getprofile()
        sys.setprofile(self.hook)
        try:
            yield
        finally:
            # Bound methods are created afresh on each access: compare with ==, not `is`.
            self.tampered = sys.getprofile() != self.hook
            sys.setprofile(previous)


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield  # signals only reach the main thread; nbgrader's per-cell timeout still applies
        return

    def on_alarm(signum, frame):
        raise ItemTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Runner:
    """Calls the student's function under the fairness rules of one item."""

    def __init__(self, item: str, func: Callable, forbidden: tuple[str, ...], seed: int):
        self.item, self.func, self.seed = item, func, seed
        self.forbidden_files = _files_of(forbidden)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        torch.manual_seed(self.seed + self.calls)
        np.random.seed(self.seed + self.calls)
        monitor = _Delegation(self.forbidden_files)
        try:
            with _time_limit(TIME_LIMIT), monitor.active():
                result = self.func(*args, **kwargs)
        except ItemTimeout:
            raise Feedback(f"{self.item}: your function did not return within {TIME_LIMIT:g} s "
                           "(an infinite loop, or far more work than needed?)") from None
        except Feedback:
            raise
        except NotImplementedError:
            raise Feedback(f"{self.item}: not implemented yet (replace `raise NotImplementedError()` "
                           "with your code)") from None
        except Exception as exc:
            raise Feedback(f"{self.item}: your function raised {type(exc).__name__}: {exc}") from exc
        if monitor.tampered:
            raise Feedback(f"{self.item}: your function switched off the grader's call monitor "
                           "(sys.setprofile): this item scores 0.")
        if monitor.seen:
            names = ", ".join(monitor.seen[:3]) + (" ..." if len(monitor.seen) > 3 else "")
            raise Feedback(f"{self.item}: your function calls {names}: the reference implementation (or a "
                           "library that implements it). Write the algorithm yourself: this item scores 0.")
        return result


# ----------------------------------------------------------------------------------------------
# Comparison helpers that turn differences into sentences


def _fail(item: str, message: str) -> None:
    raise Feedback(f"{item}: {message}")


def _as_tensor(item: str, value: Any, like: Tensor, what: str = "your result") -> Tensor:
    if not isinstance(value, Tensor):
        _fail(item, f"{what} should be a torch.Tensor of shape {tuple(like.shape)}, got {type(value).__name__}")
    if value.shape != like.shape:
        _fail(item, f"{what} has shape {tuple(value.shape)}, expected {tuple(like.shape)} (the shape of the input)")
    if not value.dtype.is_floating_point:
        _fail(item, f"{what} has dtype {value.dtype}, expected a floating-point tensor like the input")
    if torch.isnan(value).any():
        _fail(item, f"{what} contains NaN at {int(torch.isnan(value).sum())} entries "
                    "(a division by a zero norm?)")
    return value.detach().to(like.dtype)


def _unchanged(item: str, before: Tensor, after: Tensor, name: str) -> None:
    if not torch.equal(before, after):
        _fail(item, f"your function modified its input `{name}` in place; work on a copy "
                    f"(e.g. `{name}.clone()`) or use out-of-place operations")


def _box(item: str, x_adv: Tensor, lo: float = 0.0, hi: float = 1.0) -> None:
    bad = (x_adv < lo - 1e-6) | (x_adv > hi + 1e-6)
    if bad.any():
        _fail(item, f"you forgot to clamp to [0, 1]: {int(bad.sum())} pixels lie outside, from "
                    f"{x_adv.min().item():.3f} to {x_adv.max().item():.3f}")


def _linf_ball(item: str, x_adv: Tensor, x: Tensor, eps: float) -> None:
    excess = (x_adv - x).abs() - eps
    bad = excess > 1e-6
    if bad.any():
        _fail(item, f"your perturbation exceeds eps={eps:g} at {int(bad.sum())} pixels by up to "
                    f"{excess.max().item():.3g}: project x_adv - x onto [-eps, eps]")


def _l2_ball(item: str, x_adv: Tensor, x: Tensor, eps: float) -> None:
    norms = (x_adv - x).flatten(1).norm(dim=1)
    bad = norms > eps * (1 + 1e-5) + 1e-6
    if bad.any():
        _fail(item, f"your perturbation's L2 norm exceeds eps={eps:g} for {int(bad.sum())} of {len(norms)} "
                    f"examples (up to {norms.max().item():.3g}): project each example's delta onto the "
                    "L2 ball, delta * min(1, eps / ||delta||_2)")


def _close(item: str, got: Tensor, want: Tensor, *, atol: float = 1e-5, rtol: float = 1e-4,
           what: str = "your result", hint: str = "") -> None:
    diff = (got - want).abs()
    bad = diff > atol + rtol * want.abs()
    if bad.any():
        _fail(item, f"mismatch in {what}: {int(bad.sum())} of {want.numel()} entries differ from the reference, "
                    f"by up to {diff.max().item():.3g}" + (f". {hint}" if hint else ""))


def _matches(got: Tensor, want: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return got.shape == want.shape and bool(((got - want).abs() <= atol + rtol * want.abs()).all())


# ----------------------------------------------------------------------------------------------
# Test inputs


def _digits(n: int, seed: int) -> tuple[Tensor, Tensor]:
    from . import data

    ds = data.embedded_mnist()
    idx = torch.randperm(len(ds.y), generator=torch.Generator().manual_seed(seed))[:n]
    return ds.x[idx].clone(), ds.y[idx].clone()


def _cnn(seed: int) -> nn.Module:
    from . import models

    torch.manual_seed(seed)
    return models.SmallCNN().eval()


def _mlp(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, 64), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(64, 10))
    return nn.Sequential(*layers).eval()


def _zoo(name: str) -> nn.Module:
    from . import zoo

    return zoo.load(name)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Items


def _check_fgsm(run: _Runner, hidden: bool) -> int:
    from . import attacks

    cases = [(_cnn(0), *_digits(16, 0), 0.3)]
    if hidden:
        cases += [(_zoo("mnist-standard"), *_digits(32, 1), 0.1), (_mlp(2), *_digits(8, 2), 0.0),
                  (_mlp(3), torch.rand(8, 1, 28, 28, generator=_gen(3)), torch.arange(8) % 10, 0.25)]
    for model, x, y, eps in cases:
        x0, training = x.clone(), model.training
        got = run(model, x, y, eps)
        _unchanged(run.item, x0, x, "x")
        got = _as_tensor(run.item, got, x, "x_adv")
        if model.training != training:
            _fail(run.item, "your function changed the model's mode (model.train()/eval()); leave it as given")
        want = attacks.fgsm(model, x, y, eps=eps)
        if _matches(got, want):
            continue
        _box(run.item, got)
        _linf_ball(run.item, got, x, eps)
        if eps > 0 and torch.equal(got, x):
            _fail(run.item, "x_adv equals x: no perturbation. Take the gradient of the loss with respect "
                            "to the input x (x.requires_grad_(True)), not the model's parameters")
        if eps > 0 and _matches(got, attacks.fgsm(model, x, y, eps=eps, targeted=True)):
            _fail(run.item, "your step goes down the loss (x - eps * sign(grad)); FGSM adds eps * sign(grad) "
                            "to increase the loss of the true labels")
        mismatch = ((got - want).abs() > 1e-5).float().mean().item()
        if mismatch > 0.005:
            _fail(run.item, f"x_adv differs from x + eps * sign(grad_x CE) clamped to [0, 1] at "
                            f"{100 * mismatch:.1f} % of the pixels (eps={eps:g}). Use the cross-entropy of the "
                            "model's logits and the sign of its input gradient")
    return len(cases)


def _step_cases(hidden: bool, norm: str) -> list[tuple[Tensor, Tensor, Tensor, float, float]]:
    g = _gen(10 if norm == "linf" else 20)
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


def _check_step(run: _Runner, hidden: bool, norm: str) -> int:
    from . import attacks

    cases = _step_cases(hidden, norm)
    for x_adv, x, grad, alpha, eps in cases:
        copies = [t.clone() for t in (x_adv, x, grad)]
        got = run(x_adv, x, grad, alpha, eps)
        for before, after, name in zip(copies, (x_adv, x, grad), ("x_adv", "x", "grad")):
            _unchanged(run.item, before, after, name)
        got = _as_tensor(run.item, got, x, "the new x_adv")
        box = ((x - eps).clamp_min(0), (x + eps).clamp_max(1)) if norm == "linf" else None
        want = attacks.pgd_step(x_adv, x, grad, alpha=alpha, eps=eps, norm=norm)
        if _matches(got, want):
            continue
        flipped = attacks.pgd_step(x_adv, x, -grad, alpha=alpha, eps=eps, norm=norm)
        if _matches(got, flipped):
            _fail(run.item, "your step goes down the loss: move along +grad (gradient ascent)")
        _box(run.item, got)
        if norm == "linf":
            _linf_ball(run.item, got, x, eps)
            raw = torch.maximum(torch.minimum(x_adv + alpha * grad, box[1]), box[0])
            if _matches(got, raw):
                _fail(run.item, "you stepped along the raw gradient; the Linf step is alpha * sign(grad)")
            _close(run.item, got, want, what="the new x_adv",
                   hint="Expected clamp(x_adv + alpha * sign(grad), x - eps, x + eps), then clamp to [0, 1]")
        else:
            _l2_ball(run.item, got, x, eps)
            def projected(move: Tensor) -> Tensor:  # x_adv + move, projected and clamped as required
                delta = x_adv + move - x
                d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                return (x + delta * (eps / d_norm).clamp(max=1.0)).clamp(0.0, 1.0)

            if _matches(got, projected(alpha * grad)):
                _fail(run.item, "your step is alpha * grad, not normalised: the L2 step is "
                                "alpha * grad / ||grad||_2 per example, so it has length alpha")
            if _matches(got, projected(alpha * grad / grad.norm().clamp_min(1e-12))):
                _fail(run.item, "you normalised by the norm of the whole batch; normalise each example's "
                                "gradient by its own L2 norm (over the C, H, W dimensions)")
            _close(run.item, got, want, what="the new x_adv",
                   hint="Expected x_adv + alpha * grad / ||grad||_2 per example, then the projection "
                        "delta * min(1, eps / ||delta||_2) of delta = x_adv - x, then clamp to [0, 1]")
    return len(cases)


def _check_pgd_at_epoch(run: _Runner, hidden: bool) -> int:
    from .attacks import pgd

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
        x, y = _digits(48, 40 + seed)
        batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
        results = {}
        for who in ("student", "reference", "clean", "accumulating"):
            model = _mlp(seed).train()
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
        initial = torch.cat([p.detach().flatten() for p in _mlp(seed).parameters()])
        if torch.equal(params, initial):
            _fail(run.item, "the model's weights did not change: call loss.backward() and optimizer.step() "
                            "for every batch")
        if _matches(params, clean_params, atol=1e-5, rtol=1e-4):
            _fail(run.item, "you trained on the clean images; PGD-AT trains on the adversarial ones, "
                            "x_adv = robustlab.pgd(model, x, y, ...), for every batch")
        if _matches(params, results["accumulating"][1], atol=1e-5, rtol=1e-4):
            _fail(run.item, "you forgot optimizer.zero_grad(): the gradients of all earlier batches were added "
                            "to each step")
        _close(run.item, params, ref_params, atol=1e-5, rtol=1e-3, what="the weights after your epoch",
               hint="Per batch: x_adv from robustlab.pgd(..., random_start=False), then model.train(), "
                    "optimizer.zero_grad(), the mean cross-entropy on x_adv, backward, optimizer.step()")
        if not isinstance(loss, (float, int)) and not (isinstance(loss, Tensor) and loss.numel() == 1):
            _fail(run.item, f"return the mean training loss as a float, got {type(loss).__name__}")
        if not math.isclose(float(loss), ref_loss, rel_tol=1e-3, abs_tol=1e-5):
            _fail(run.item, f"you returned {float(loss):.5f}; the mean of the batch losses is {ref_loss:.5f}")
    return len(settings)


class _ModeRecorder:
    def __init__(self, model: nn.Module):
        self.training_calls = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.training_calls += int(module.training)


def _check_evaluate(run: _Runner, hidden: bool) -> int:
    from .attacks import pgd

    settings = [(_zoo("mnist-pgd-linf-0.3"), 64, 0.3, 0.05, 10, True)]
    if hidden:
        settings += [(_mlp(5, dropout=0.5), 40, 0.1, 0.03, 5, True),
                     (_zoo("mnist-standard"), 50, 0.1, 0.025, 10, False)]
    for i, (model, n, eps, alpha, steps, start_in_train) in enumerate(settings):
        x, y = _digits(n, 60 + i)
        model.eval()
        x_adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
        if start_in_train:
            model.train()
        recorder = _ModeRecorder(model)
        try:
            got = run(model, x, y, eps=eps, alpha=alpha, steps=steps)
        finally:
            recorder.handle.remove()
        if recorder.training_calls:
            _fail(run.item, f"you ran the model in training mode ({recorder.training_calls} forward passes; dropout "
                            "and batch norm then behave differently): call model.eval() before evaluating")
        if not (isinstance(got, tuple) and len(got) == 2):
            _fail(run.item, f"return a pair (clean_accuracy, robust_accuracy), got {got!r}")
        got = tuple(float(v) for v in got)
        if any(v > 1 for v in got):
            _fail(run.item, f"you returned {got}: accuracies are fractions in [0, 1], not counts or percentages")
        if not math.isclose(got[0], clean, abs_tol=1e-6):
            _fail(run.item, f"clean accuracy {got[0]:.4f}, expected {clean:.4f}")
        if math.isclose(got[1], clean, abs_tol=1e-6) and not math.isclose(robust, clean, abs_tol=1e-6):
            _fail(run.item, "your robust accuracy equals the clean accuracy: classify the adversarial examples")
        if not math.isclose(got[1], robust, abs_tol=1e-6):
            _fail(run.item, f"robust accuracy {got[1]:.4f}, expected {robust:.4f} (PGD with random_start=False, "
                            "the share of adversarial examples still classified correctly)")
    return len(settings)


def _check_gradreg_loss(run: _Runner, hidden: bool) -> int:
    from .train import TrainConfig, training_loss

    settings = [(_cnn(7), 16, 0.5)] + ([(_mlp(8), 9, 3.0), (_cnn(9), 1, 0.0)] if hidden else [])
    for i, (model, n, lam) in enumerate(settings):
        model.train()
        x, y = _digits(n, 80 + i)
        x0 = x.clone()
        model.zero_grad()
        got = run(model, x, y, lam)
        _unchanged(run.item, x0, x, "x")
        if not isinstance(got, Tensor) or got.numel() != 1:
            _fail(run.item, f"return the loss as a scalar tensor, got {type(got).__name__}"
                            f"{'' if not isinstance(got, Tensor) else ' of shape ' + str(tuple(got.shape))}")
        if not got.requires_grad:
            _fail(run.item, "your loss is not differentiable (it has no autograd graph): do not detach it or "
                            "compute it under torch.no_grad()")
        model.zero_grad()
        try:
            got.backward()
        except RuntimeError as exc:
            _fail(run.item, f"backpropagating through your loss fails ({str(exc).split('.')[0]}). The penalty "
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
            _fail(run.item, f"loss {got.item():.6f}, expected {want.item():.6f} (cross-entropy {ce:.6f} plus "
                            f"penalty {penalty_want:.6f}).{hint}")
        close = all(_matches(a, b, atol=1e-6, rtol=1e-3) for a, b in zip(got_grads, want_grads))
        if not close and lam > 0:
            _fail(run.item, "the value is right but its gradient with respect to the parameters is not: the "
                            "penalty must be trained through (double backpropagation). Compute the input "
                            "gradient with torch.autograd.grad(..., create_graph=True)")
    return len(settings)


class _Linear2(nn.Module):
    """Two classes, logit difference ``w.x + b``: the smoothed classifier's probabilities are exact."""

    def __init__(self, w: Tensor, b: float):
        super().__init__()
        self.w, self.b = w.flatten(), b
        self.largest_batch = 0

    def forward(self, x):
        self.largest_batch = max(self.largest_batch, x.shape[0])
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score / 2, score / 2], dim=1)

    def p_class1(self, x: Tensor, sigma: float) -> float:
        return float(normal.cdf((x.flatten() @ self.w + self.b).item() / (sigma * self.w.norm().item())))

    def radius(self, x: Tensor) -> float:
        return abs((x.flatten() @ self.w + self.b).item()) / self.w.norm().item()


def _check_sample_counts(run: _Runner, hidden: bool) -> int:
    w = torch.tensor([1.0, -2.0, 0.5, 1.0])
    # x near 0 with sigma 0.5: clamping the noisy images to [0, 1] would change the probabilities.
    cases = [(torch.tensor([0.05, 0.1, 0.0, 0.2]).view(1, 2, 2), 0.5, 4000, 1000)]
    if hidden:
        cases += [(torch.tensor([0.9, 0.1, 0.3, 0.0]).view(1, 2, 2), 1.0, 3000, 64),
                  (torch.tensor([0.2, 0.2, 0.2, 0.2]).view(1, 2, 2), 0.25, 1001, 1000)]
    for x, sigma, n, batch_size in cases:
        model = _Linear2(w, 0.1).eval()
        x0 = x.clone()
        got = run(model, x, sigma=sigma, n=n, num_classes=2, batch_size=batch_size)
        _unchanged(run.item, x0, x, "x")
        if not isinstance(got, Tensor) or got.shape != (2,):
            _fail(run.item, f"return a (num_classes,) tensor of counts, got "
                            f"{type(got).__name__}{'' if not isinstance(got, Tensor) else tuple(got.shape)}")
        if got.dtype.is_floating_point:
            _fail(run.item, f"counts should be integers (torch.int64), got {got.dtype}")
        if int(got.sum()) != n:
            _fail(run.item, f"your counts add up to {int(got.sum())}, expected n={n} (one class per noisy sample)")
        if model.largest_batch > batch_size:
            _fail(run.item, f"you passed {model.largest_batch} noisy images to the model at once; use batches "
                            f"of at most batch_size={batch_size} (memory)")
        p = model.p_class1(x, sigma)
        k = int(got[1])
        sd = math.sqrt(n * p * (1 - p))
        if abs(k - n * p) > 5 * sd + 1:
            hint = ""
            if k in (0, n):
                hint = " Every sample got the same class: did you add the noise?"
            _fail(run.item, f"class 1 was counted {k} times in {n} samples; with Gaussian noise of standard "
                            f"deviation sigma={sigma:g} (added to x in pixel space, not clamped) expect "
                            f"{n * p:.0f} +- {sd:.0f}.{hint}")
    return len(cases)


def _check_lower_confidence_bound(run: _Runner, hidden: bool) -> int:
    cases = [(100, 100, 0.001), (60_000, 100_000, 0.001), (7, 10, 0.05)]
    if hidden:
        cases += [(0, 50, 0.01), (1, 1, 0.1), (999, 1000, 1e-4), (500, 1000, 0.5), (3, 100_000, 0.001)]
    for k, n, alpha in cases:
        got = run(k, n, alpha)
        try:
            got = float(got)
        except (TypeError, ValueError):
            _fail(run.item, f"return a float, got {type(got).__name__}")
        want = 0.0 if k == 0 else float(beta_dist.ppf(alpha, k, n - k + 1))
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        where = f"for count={k}, n={n}, alpha={alpha:g} you returned {got!r}, expected {want:.6g}"
        if math.isnan(got):
            _fail(run.item, f"{where}: with count=0 the bound is 0 (the Beta quantile is undefined there)")
        if k > 0 and math.isclose(got, float(beta_dist.ppf(alpha / 2, k, n - k + 1)), rel_tol=1e-6):
            _fail(run.item, f"{where}: you used alpha/2, the two-sided interval; the certificate needs the "
                            "ONE-sided lower bound at level alpha, Beta(alpha; count, n - count + 1)")
        if k < n and math.isclose(got, float(beta_dist.ppf(1 - alpha, k + 1, n - k)), rel_tol=1e-6):
            _fail(run.item, f"{where}: that is the upper bound; use the lower one, Beta(alpha; count, n - count + 1)")
        phat = k / n
        wald = phat - normal.ppf(1 - alpha) * math.sqrt(phat * (1 - phat) / n)
        if math.isclose(got, wald, rel_tol=1e-4, abs_tol=1e-9):
            _fail(run.item, f"{where}: that is the normal approximation, which is not a valid bound for "
                            "proportions near 0 or 1; use the exact Clopper–Pearson bound (a Beta quantile)")
        _fail(run.item, f"{where} (the one-sided Clopper–Pearson bound, scipy.stats.beta.ppf(alpha, count, "
                        "n - count + 1))")
    return len(cases)


def _check_certify(run: _Runner, hidden: bool) -> int:
    w = torch.tensor([2.0, -1.0, 1.0, 0.0])
    sigma, n0, n, alpha = 0.25, 100, 2000, 0.001
    # (x, what): an easy point (every sample class 1), a moderate one, one on the boundary.
    cases = [(torch.tensor([1.0, 0.0, 1.0, 0.0]), "easy"), (torch.tensor([0.3, 0.2, 0.2, 0.5]), "moderate"),
             (torch.tensor([0.1, 0.1, 0.0, 0.0]), "boundary")]
    if hidden:
        cases += [(torch.tensor([1.0, 0.0, 0.9, 0.3]), "easy"), (torch.tensor([0.25, 0.15, 0.0, 1.0]), "moderate")]
    for x, what in cases:
        x = x.view(1, 2, 2)
        b = -0.1 if what == "boundary" else 0.1
        model = _Linear2(w, b).eval()
        model_eval_state = model.training
        got = run(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=500)
        if model.training != model_eval_state:
            _fail(run.item, "your function changed the model's mode; leave it as given")
        if not (isinstance(got, tuple) and len(got) == 2):
            _fail(run.item, f"return a pair (prediction, radius), got {got!r}")
        prediction, radius = int(got[0]), float(got[1])
        score = (x.flatten() @ model.w + b).item()
        true_class, exact = int(score > 0), model.radius(x)
        if what == "boundary":
            if prediction != -1:
                _fail(run.item, f"a point on the decision boundary (p_A = 0.5) must abstain (prediction -1), you "
                                f"certified class {prediction} with radius {radius:.3f}: abstain when the lower "
                                "bound on p_A is below 1/2")
            continue
        if prediction != true_class:
            _fail(run.item, f"predicted {prediction} for a point the smoothed classifier puts in class "
                            f"{true_class} with probability "
                            f"{max(model.p_class1(x, sigma), 1 - model.p_class1(x, sigma)):.3f}")
        if radius < 0:
            _fail(run.item, f"negative radius {radius:.3f}: abstain (-1) instead when p_A_lower < 1/2")
        if what == "easy":
            cap = sigma * normal.ppf(alpha ** (1 / n))
            cap_n0 = sigma * normal.ppf(alpha ** (1 / n0))
            if math.isclose(radius, cap_n0, rel_tol=1e-3):
                _fail(run.item, f"radius {radius:.4f} is the bound from the n0={n0} selection samples; estimate "
                                f"p_A from n={n} fresh samples (expected {cap:.4f})")
            if not math.isclose(radius, cap, rel_tol=1e-3):
                _fail(run.item, f"when all n={n} samples vote for the class the radius is "
                                f"sigma * Phi^-1(alpha^(1/n)) = {cap:.4f}; you returned {radius:.4f}")
        elif not (0.7 * exact <= radius <= exact * 1.02):
            _fail(run.item, f"radius {radius:.4f} for a point at exact L2 distance {exact:.4f} from the boundary; a "
                            f"sound certificate is a little below it (sigma * Phi^-1(p_A_lower)), expected "
                            f"{0.7 * exact:.3f} .. {exact:.3f}")
    return len(cases)


class _ReluModel(nn.Module):
    """logit_c(x) = sum_i W[c, i] relu(x_i - t_i): its SmoothGrad is W[c, i] Phi((x_i - t_i) / sigma)."""

    def __init__(self, shape: tuple[int, ...], classes: int, seed: int):
        super().__init__()
        g = _gen(seed)
        size = int(np.prod(shape))
        self.weight = nn.Parameter(torch.randn(classes, size, generator=g))
        self.t = torch.rand(size, generator=g) * 0.6 + 0.2

    def forward(self, x):
        return F.relu(x.flatten(1) - self.t) @ self.weight.T

    def smoothgrad(self, x: Tensor, target: Tensor, sigma: float) -> Tensor:
        phi = torch.from_numpy(normal.cdf(((x.flatten(1) - self.t) / sigma).numpy())).to(x.dtype)
        return (self.weight[target] * phi).detach().view_as(x)


def _check_gradient(run: _Runner, hidden: bool) -> int:
    from . import saliency

    cases = [(_cnn(11), *_digits(8, 110))]
    if hidden:
        cases += [(_mlp(12), *_digits(5, 111)), (_zoo("mnist-pgd-linf-0.3"), *_digits(6, 112))]
    for i, (model, x, y) in enumerate(cases):
        target = (y + i) % 10  # not always the label, not always the prediction
        x0 = x.clone()
        got = run(model, x, target)
        _unchanged(run.item, x0, x, "x")
        got = _as_tensor(run.item, got, x, "your map")
        want = saliency.gradient(model, x, target)
        if _matches(got, want, atol=1e-6, rtol=1e-4):
            continue
        if _matches(got, want.abs(), atol=1e-6, rtol=1e-4):
            _fail(run.item, "you returned |gradient|; return the signed gradient (take abs() only when plotting)")
        predicted = model(x).argmax(1)
        if not torch.equal(predicted, target) and _matches(got, saliency.gradient(model, x, predicted), atol=1e-6):
            _fail(run.item, "you explained the predicted class; explain the class given in `target`")
        x_in = x.clone().requires_grad_(True)
        logp = F.log_softmax(model(x_in), 1).gather(1, target[:, None]).sum()
        if _matches(got, torch.autograd.grad(logp, x_in)[0], atol=1e-6):
            _fail(run.item, "you differentiated the log-probability (or the loss); the gradient map uses the "
                            "target class's logit, before the softmax")
        _close(run.item, got, want, atol=1e-6, what="your map",
               hint="Expected d logit[target] / dx for each example")
    return len(cases)


def _check_smoothgrad(run: _Runner, hidden: bool) -> int:
    cases = [((1, 4, 4), 0.2, 2000)] + ([((2, 3, 3), 0.5, 3000)] if hidden else [])
    for j, (shape, sigma, samples) in enumerate(cases):
        model = _ReluModel(shape, 3, seed=120 + j)
        x = torch.rand((4, *shape), generator=_gen(130 + j))
        target = torch.tensor([0, 1, 2, 1])
        x0 = x.clone()
        got = run(model, x, target, sigma=sigma, samples=samples)
        _unchanged(run.item, x0, x, "x")
        got = _as_tensor(run.item, got, x, "your map")
        want = model.smoothgrad(x, target, sigma)
        scale = model.weight[target].abs().view_as(x)
        # One Bernoulli average per pixel: standard error <= 0.5 |W| / sqrt(samples); allow 5.5 of them.
        tol = 5.5 * 0.5 * scale / math.sqrt(samples) + 1e-6
        if ((got - want).abs() <= tol).all():
            continue
        plain = model.smoothgrad(x, target, 1e-6)
        if _matches(got, plain, atol=1e-5):
            _fail(run.item, "your map equals the plain gradient: average the gradient over noisy copies "
                            "x + N(0, sigma^2) of the input")
        ratio = (got.abs().sum() / want.abs().sum()).item()
        if ratio > samples / 3:
            _fail(run.item, f"your map is about {ratio:.0f} times too large: average over the samples, don't sum")
        for wrong, name in ((sigma ** 2, "sigma^2 (a variance)"), (math.sqrt(sigma), "sqrt(sigma)")):
            if ((got - model.smoothgrad(x, target, wrong)).abs() <= tol).all():
                _fail(run.item, f"your noise has standard deviation {name}; use torch.randn_like(x) * sigma")
        worst = ((got - want).abs() / tol).max().item()
        _fail(run.item, f"your SmoothGrad differs from the exact expectation by up to {worst:.1f} times the "
                        f"sampling tolerance (sigma={sigma:g}, {samples} samples). Average d logit[target] / dx "
                        "over x + sigma * randn, with fresh noise per sample")
    return len(cases)


def _check_integrated_gradients(run: _Runner, hidden: bool) -> int:
    from . import saliency

    cases = [(_mlp(14), *_digits(4, 140), None)]
    if hidden:
        cases += [(_cnn(15), *_digits(3, 141), 0.5), (_mlp(16), torch.rand(2, 1, 28, 28, generator=_gen(142)),
                                                     torch.tensor([3, 7]), "random")]
    steps = 128
    for i, (model, x, y, baseline) in enumerate(cases):
        if baseline == "random":
            baseline = torch.rand(x.shape, generator=_gen(143))
        b = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline).expand_as(x)
        x0 = x.clone()
        got = run(model, x, y, baseline=b, steps=steps)
        _unchanged(run.item, x0, x, "x")
        got = _as_tensor(run.item, got, x, "your attribution")
        want = saliency.integrated_gradients(model, x, y, baseline=b, steps=steps)
        rel = ((got - want).flatten(1).norm(dim=1) / want.flatten(1).norm(dim=1).clamp_min(1e-12)).max().item()
        if rel <= 0.03:
            continue
        with torch.no_grad():
            gap = (model(x).gather(1, y[:, None]) - model(b).gather(1, y[:, None])).squeeze(1)
        total = got.flatten(1).sum(1)
        grad = saliency.gradient(model, x, y)
        if _matches(got, grad, atol=1e-5, rtol=1e-2) or _matches(got, grad * (x - b), atol=1e-5, rtol=1e-2):
            _fail(run.item, "your attribution uses the gradient at x only; integrate the gradient along the "
                            "straight path from the baseline to x (average it over `steps` points)")
        if (total / gap).sub(steps).abs().max() < 0.1 * steps:
            _fail(run.item, f"your attributions sum to about {steps} times f(x) - f(baseline): average the "
                            "path gradients over the steps, don't sum them")
        if _matches(got * (x - b), want, atol=1e-4, rtol=0.03):
            _fail(run.item, "multiply the averaged path gradient by (x - baseline)")
        _fail(run.item, f"your attribution differs from the reference by {100 * rel:.1f} % (relative L2, worst "
                        f"example; {steps} steps). Completeness check: your attributions sum to "
                        f"{total.tolist()} while f(x) - f(baseline) is {gap.tolist()}")
    return len(cases)


def _check_mask_top(run: _Runner, hidden: bool) -> int:
    from . import interpret

    g = _gen(150)
    cases = [(torch.rand(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g), 0.25, False, 0.0)]
    if hidden:
        cases += [(torch.rand(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g), 0.33, False, 0.5),
                  (torch.rand(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g), 0.1, True, 0.0),
                  (torch.rand(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g), 0.0, False, 0.0),
                  (torch.rand(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g), 1.0, False, 0.3)]
    for x, attr, fraction, keep, fill in cases:
        copies = (x.clone(), attr.clone())
        got = run(x, attr, fraction, keep=keep, fill=fill)
        _unchanged(run.item, copies[0], x, "x")
        _unchanged(run.item, copies[1], attr, "attr")
        got = _as_tensor(run.item, got, x, "your masked images")
        want = interpret.mask_top(x, attr, fraction, keep=keep, fill=fill)
        if torch.equal(got, want):
            continue
        n, c, h, w = x.shape
        k = round(fraction * h * w)
        changed = (got != x).any(dim=1).flatten(1).sum(1)  # pixels replaced per image
        expected = (want != x).any(dim=1).flatten(1).sum(1)
        mode = "kept" if keep else "replaced"
        if not torch.equal(changed, expected):
            per_image = changed.tolist()
            _fail(run.item, f"pixels replaced per image: {per_image}, expected {expected.tolist()} "
                            f"(fraction={fraction:g} of {h * w} pixels: k = round(fraction * H * W) = {k} "
                            f"{mode} in EVERY image, ranked per image, in all channels)")
        # Attributions whose channel-summed |.| orders the pixels in reverse, or by the signed sum.
        score = attr.abs().sum(1, keepdim=True)
        reverse = ((score.max() - score + 1e-6) / c).expand_as(attr)
        signed = attr.sum(1, keepdim=True)
        by_sign = ((signed - signed.min() + 1e-6) / c).expand_as(attr)
        if torch.equal(got, interpret.mask_top(x, reverse, fraction, keep=keep, fill=fill)):
            _fail(run.item, "you replaced the LEAST important pixels; ROAR removes the top-ranked ones")
        if torch.equal(got, interpret.mask_top(x, by_sign, fraction, keep=keep, fill=fill)):
            _fail(run.item, "rank pixels by |attr| summed over the channels, not by the signed attribution")
        if torch.equal(got, interpret.mask_top(x, attr, fraction, keep=not keep, fill=fill)):
            _fail(run.item, f"with keep={keep} you should {'keep' if keep else 'replace'} the top pixels and "
                            f"{'replace' if keep else 'keep'} the others")
        _fail(run.item, f"{int((got != want).sum())} values differ from the reference "
                        f"(fill={fill:g}: replaced pixels take exactly this value in every channel)")
    return len(cases)


# item -> (check, modules the student's function must not call into)
ITEMS: dict[str, tuple[Callable[[_Runner, bool], int], tuple[str, ...]]] = {
    "fgsm": (_check_fgsm, ("robustlab.attacks",)),
    "pgd_linf_step": (lambda run, hidden: _check_step(run, hidden, "linf"), ("robustlab.attacks",)),
    "pgd_l2_step": (lambda run, hidden: _check_step(run, hidden, "l2"), ("robustlab.attacks",)),
    # The training items may use robustlab.pgd for the inner maximisation (their contract says so).
    "pgd_at_epoch": (_check_pgd_at_epoch, ("robustlab.train",)),
    "evaluate": (_check_evaluate, ("robustlab.train", "robustlab.report", "robustlab.evaluate")),
    "gradreg_loss": (_check_gradreg_loss, ("robustlab.train",)),
    "sample_counts": (_check_sample_counts, ("robustlab.smoothing",)),
    "lower_confidence_bound": (_check_lower_confidence_bound, ("robustlab.smoothing",)),
    "certify": (_check_certify, ("robustlab.smoothing",)),
    "gradient": (_check_gradient, ("robustlab.saliency",)),
    "smoothgrad": (_check_smoothgrad, ("robustlab.saliency",)),
    "integrated_gradients": (_check_integrated_gradients, ("robustlab.saliency",)),
    "mask_top": (_check_mask_top, ("robustlab.interpret",)),
}


def check(item: str, func: Callable, *, hidden: bool = False, quiet: bool = False) -> None:
    """Checks a student's implementation of ``item`` against the reference.

    Args:
        item: one of :data:`ITEMS` (e.g. ``"fgsm"``).
        func: the student's function.
        hidden: also run the randomised and edge cases of the hidden tests.
        quiet: do not print the success line.

    Returns nothing (a number as the last value of a test cell would be read by nbgrader as
    partial credit); the success line says how many cases were checked.

    Raises:
        Feedback: with a message saying what is wrong and how to fix it.
    """
    if item not in ITEMS:
        raise ValueError(f"item must be one of {sorted(ITEMS)}, got {item!r}")
    if not callable(func):
        raise Feedback(f"{item}: expected your function, got {type(func).__name__} {func!r}")
    module = getattr(func, "__module__", "") or ""
    if module == "robustlab" or module.startswith("robustlab.") or module.split(".")[0] in PEER_PACKAGES:
        raise Feedback(f"{item}: `{getattr(func, '__qualname__', func)}` is {module}'s own function, not yours. "
                       "Write the algorithm yourself: this item scores 0.")
    checker, forbidden = ITEMS[item]
    state = torch.get_rng_state()
    # nbgrader scores a test cell 0 when anything reaches stderr, so warnings (from the student's
    # code or ours) and stray stderr writes (progress bars) are shown on stdout instead.
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("always")
        try:
            cases = checker(_Runner(item, func, forbidden, seed=sum(map(ord, item))), hidden)
        finally:
            torch.set_rng_state(state)
            notes = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)
            for note in notes:
                print(f"{item}: note, a warning was raised (it costs nothing): {note}")
    if not quiet:
        print(f"{item}: {cases} {'hidden' if hidden else 'visible'} case(s) passed")
