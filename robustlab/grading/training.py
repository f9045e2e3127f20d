"""Checks of the training assignment: one PGD-AT epoch, clean and robust accuracy, one epoch of
fast adversarial training (FGSM with or without a random start) and the TRADES loss."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .compare import close, fail, matches, scalar_loss, unchanged
from .inputs import digits, gen, mlp, zoo_model
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
            # The hidden setting hands the model over in eval mode: the step must switch it to training.
            model = mlp(seed) if seed else mlp(seed).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            if who == "student":
                loss = run(model, batches, optimizer, eps=eps, alpha=alpha, steps=steps)
                if run.observed(model).training_calls < len(batches):
                    fail(run.item, f"your model ran {run.observed(model).training_calls} forward passes in training "
                                   f"mode for {len(batches)} batches: call model.train() before each training step "
                                   "(robustlab.pgd may leave the model as it found it, in eval mode here)")
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


# --- Fast adversarial training: one FGSM step, with or without a random start --------------------

def _fast_reference(model, batches, optimizer, eps: float, alpha: float, *, project: bool = True,
                    clamp: bool = True, in_graph: bool = False, sign: bool = True) -> float:
    """One epoch of FGSM training from x (no random start), as the exercise specifies it (Wong et
    al.'s procedure: delta, kept so that x + delta lies in [0, 1], is the leaf the gradient is
    taken for); the keywords give the variants the diagnosis looks for."""
    losses = []
    model.train()
    for xb, yb in batches:
        delta = torch.zeros_like(xb, requires_grad=True)
        # in_graph: clamping x + delta inside the graph zeroes the gradient at black and white pixels
        (grad,) = torch.autograd.grad(F.cross_entropy(model((xb + delta).clamp(0, 1) if in_graph else xb + delta),
                                                      yb), delta)
        delta = delta.detach() + alpha * (grad.sign() if sign else grad)
        if project:
            delta = delta.clamp(-eps, eps)
        x_adv = (xb + delta).clamp(0, 1) if clamp else xb + delta
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def _weights(model) -> Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _check_random_start(run: Runner, eps: float) -> None:
    """With alpha=0 and lr=0 the model sees x + delta (twice per batch, the same images): on a
    constant grey image the start's statistics can be read off what it received."""
    model = mlp(12)
    x = torch.full((48, 1, 28, 28), 0.5)
    y = torch.arange(48) % 10
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    run(model, batches, optimizer, eps=eps, alpha=0.0, random_start=True)
    seen = run.observed(model)
    if seen.distinct <= len(batches):
        fail(run.item, f"with random_start=True the model saw {seen.distinct} different images for 48 examples in "
                       f"{len(batches)} batches: draw a fresh uniform start for every example of every batch, "
                       "delta = torch.empty_like(x).uniform_(-eps, eps)")
    if seen.distinct < len(x):
        fail(run.item, f"the model saw {seen.distinct} different images for 48 examples: draw a fresh start for "
                       "every batch, not once for the epoch")
    entries = seen.distinct * x[0].numel()
    mean = seen.total / entries - 0.5
    spread = (seen.squares / entries - (seen.total / entries) ** 2) / eps ** 2
    if seen.lowest < 0.5 - eps - 1e-6 or seen.highest > 0.5 + eps + 1e-6 or abs(mean) > 0.02 * eps \
            or abs(spread - 1 / 3) > 0.03:
        fail(run.item, f"your random start has mean {mean:+.3g} and variance {spread:.3f} eps^2 (range "
                       f"{seen.lowest - 0.5:+.3g} to {seen.highest - 0.5:+.3g}); uniform in [-eps, eps] per pixel "
                       "has mean 0 and variance eps^2 / 3 (torch.empty_like(x).uniform_(-eps, eps))")


def _check_fgsm_rs_epoch(run: Runner, hidden: bool) -> int:
    settings = [(0, 0.3, 0.3)] + ([(1, 0.1, 0.125)] if hidden else [])  # plain FGSM; then alpha > eps
    for seed, eps, alpha in settings:
        x, y = digits(48, 90 + seed)
        batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]

        def trained(**keywords) -> tuple[float, Tensor]:
            """The reference epoch (or, with keywords, a variant of it) from the same start."""
            model = mlp(10 + seed)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            loss = _fast_reference(model, batches, optimizer, eps, keywords.pop("alpha", alpha), **keywords)
            return loss, _weights(model)

        model = mlp(10 + seed)  # handed over in eval mode
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = run(model, batches, optimizer, eps=eps, alpha=alpha, random_start=False)
        seen, params = run.observed(model), _weights(model)
        ref_loss, ref_params = trained()
        if seen.training_calls < seen.calls:
            fail(run.item, f"{seen.calls - seen.training_calls} of the model's {seen.calls} forward passes ran in "
                           "eval mode: call model.train() once at the start; the attack and the step both run in "
                           "training mode (as Wong et al.'s fast adversarial training does)")
        if torch.equal(params, _weights(mlp(10 + seed))):
            fail(run.item, "the model's weights did not change: call loss.backward() and optimizer.step() for "
                           "every batch")
        # The variants are trained only to say what went wrong (a step of 0 trains on the clean images).
        diagnoses = [({"sign": False}, "you stepped along the raw gradient; the FGSM step is alpha * sign(grad)"),
                     ({"in_graph": True}, "you clamped x + delta to [0, 1] inside the graph the gradient goes "
                                          "through: the clamp's gradient is 0 where x is 0 or 1 (most of an MNIST "
                                          "digit), so those pixels never move. Keep delta within [-x, 1 - x] before "
                                          "it requires grad and feed the model x + delta"),
                     ({"alpha": 0.0}, "you trained on the clean images: train on x_adv = clamp(x + delta, 0, 1) after "
                                      "the FGSM step"),
                     ({"clamp": False}, "your x_adv leaves [0, 1]: clamp x + delta to the image range before training "
                                        "on it")]
        if alpha > eps:
            diagnoses.insert(3, ({"project": False}, f"with alpha={alpha:g} > eps={eps:g} the step leaves the ball: "
                                                     "project delta back, delta.clamp(-eps, eps)"))
        if not matches(params, ref_params, atol=1e-5, rtol=1e-3):
            for keywords, message in diagnoses:
                if matches(params, trained(**keywords)[1], atol=1e-5, rtol=1e-4):
                    fail(run.item, message)
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


# --- Fast adversarial training: one FGSM step, with or without a random start --------------------

def _fast_reference(model, batches, optimizer, eps: float, alpha: float, *, project: bool = True,
                    clamp: bool = True, in_graph: bool = False, sign: bool = True) -> float:
    """One epoch of FGSM training from x (no random start), as the exercise specifies it (Wong et
    al.'s procedure: delta, kept so that x + delta lies in [0, 1], is the leaf the gradient is
    taken for); the keywords give the variants the diagnosis looks for."""
    losses = []
    model.train()
    for xb, yb in batches:
        delta = torch.zeros_like(xb, requires_grad=True)
        # in_graph: clamping x + delta inside the graph zeroes the gradient at black and white pixels
        (grad,) = torch.autograd.grad(F.cross_entropy(model((xb + delta).clamp(0, 1) if in_graph else xb + delta),
                                                      yb), delta)
        delta = delta.detach() + alpha * (grad.sign() if sign else grad)
        if project:
            delta = delta.clamp(-eps, eps)
        x_adv = (xb + delta).clamp(0, 1) if clamp else xb + delta
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def _weights(model) -> Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _check_random_start(run: Runner, eps: float) -> None:
    """With alpha=0 and lr=0 the model sees x + delta (twice per batch, the same images): on a
    constant grey image the start's statistics can be read off what it received."""
    model = mlp(12)
    x = torch.full((48, 1, 28, 28), 0.5)
    y = torch.arange(48) % 10
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    run(model, batches, optimizer, eps=eps, alpha=0.0, random_start=True)
    seen = run.observed(model)
    if seen.distinct <= len(batches):
        fail(run.item, f"with random_start=True the model saw {seen.distinct} different images for 48 examples in "
                       f"{len(batches)} batches: draw a fresh uniform start for every example of every batch, "
                       "delta = torch.empty_like(x).uniform_(-eps, eps)")
    if seen.distinct < len(x):
        fail(run.item, f"the model saw {seen.distinct} different images for 48 examples: draw a fresh start for "
                       "every batch, not once for the epoch")
    entries = seen.distinct * x[0].numel()
    mean = seen.total / entries - 0.5
    spread = (seen.squares / entries - (seen.total / entries) ** 2) / eps ** 2
    if seen.lowest < 0.5 - eps - 1e-6 or seen.highest > 0.5 + eps + 1e-6 or abs(mean) > 0.02 * eps \
            or abs(spread - 1 / 3) > 0.03:
        fail(run.item, f"your random start has mean {mean:+.3g} and variance {spread:.3f} eps^2 (range "
                       f"{seen.lowest - 0.5:+.3g} to {seen.highest - 0.5:+.3g}); uniform in [-eps, eps] per pixel "
                       "has mean 0 and variance eps^2 / 3 (torch.empty_like(x).uniform_(-eps, eps))")


def _check_fgsm_rs_epoch(run: Runner, hidden: bool) -> int:
    settings = [(0, 0.3, 0.3)] + ([(1, 0.1, 0.125)] if hidden else [])  # plain FGSM; then alpha > eps
    for seed, eps, alpha in settings:
        x, y = digits(48, 90 + seed)
        batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
        results = {}
        variants = {"reference": {}, "clean": None, "unprojected": {"project": False},
                    "unclamped": {"clamp": False}, "in_graph": {"in_graph": True}, "raw": {"sign": False}}
        for who in ("student", *variants):
            model = mlp(10 + seed)  # handed over in eval mode
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            if who == "student":
                loss = run(model, batches, optimizer, eps=eps, alpha=alpha, random_start=False)
                seen = run.observed(model)
            elif who == "clean":
                model.train()
                for xb, yb in batches:
                    optimizer.zero_grad()
                    F.cross_entropy(model(xb), yb).backward()
                    optimizer.step()
                loss = math.nan
            else:
                loss = _fast_reference(model, batches, optimizer, eps, alpha, **variants[who])
            results[who] = (loss, _weights(model))
        (loss, params), (ref_loss, ref_params) = results["student"], results["reference"]
        if seen.training_calls < seen.calls:
            fail(run.item, f"{seen.calls - seen.training_calls} of the model's {seen.calls} forward passes ran in "
                           "eval mode: call model.train() once at the start; the attack and the step both run in "
                           "training mode (as Wong et al.'s fast adversarial training does)")
        if torch.equal(params, _weights(mlp(10 + seed))):
            fail(run.item, "the model's weights did not change: call loss.backward() and optimizer.step() for "
                           "every batch")
        if matches(params, results["raw"][1], atol=1e-5, rtol=1e-4):
            fail(run.item, "you stepped along the raw gradient; the FGSM step is alpha * sign(grad)")
        if matches(params, results["in_graph"][1], atol=1e-5, rtol=1e-4):
            fail(run.item, "you clamped x + delta to [0, 1] inside the graph the gradient goes through: the clamp's "
                           "gradient is 0 where x is 0 or 1 (most of an MNIST digit), so those pixels never move. "
                           "Keep delta within [-x, 1 - x] before it requires grad and feed the model x + delta")
        if matches(params, results["clean"][1], atol=1e-5, rtol=1e-4):
            fail(run.item, "you trained on the clean images: train on x_adv = clamp(x + delta, 0, 1) after the "
                           "FGSM step")
        if alpha > eps and matches(params, results["unprojected"][1], atol=1e-5, rtol=1e-4):
            fail(run.item, f"with alpha={alpha:g} > eps={eps:g} the step leaves the ball: project delta back, "
                           "delta.clamp(-eps, eps)")
        if matches(params, results["unclamped"][1], atol=1e-5, rtol=1e-4):
            fail(run.item, "your x_adv leaves [0, 1]: clamp x + delta to the image range before training on it")
        close(run.item, params, ref_params, atol=1e-5, rtol=1e-3, what="the weights after your epoch",
              hint="Per batch: the loss at x + delta (delta within [-x, 1 - x]), delta = delta + alpha * "
                   "sign(grad_delta), projected to [-eps, eps], then a training step on clamp(x + delta, 0, 1)")
        if not isinstance(loss, (float, int)) and not (isinstance(loss, Tensor) and loss.numel() == 1):
            fail(run.item, f"return the mean training loss as a float, got {type(loss).__name__}")
        if not math.isclose(float(loss), ref_loss, rel_tol=1e-3, abs_tol=1e-5):
            fail(run.item, f"you returned {float(loss):.5f}; the mean of the batch losses is {ref_loss:.5f}")
    if hidden:
        _check_random_start(run, 0.1)
    return len(settings) + int(hidden)


# --- The TRADES loss -----------------------------------------------------------------------------

def _trades(model, x: Tensor, x_adv: Tensor, y: Tensor, beta: float, *, reverse: bool = False,
            reduction: str = "batchmean", detach: bool = False, adversarial_ce: bool = False) -> Tensor:
    natural, adversarial = model(x), model(x_adv)
    target = F.softmax(natural.detach() if detach else natural, dim=1)
    with warnings.catch_warnings():  # reduction="mean" warns; here it is a variant looked for on purpose
        warnings.simplefilter("ignore")
        if reverse:
            kl = F.kl_div(F.log_softmax(natural, dim=1), F.softmax(adversarial, dim=1), reduction=reduction)
        else:
            kl = F.kl_div(F.log_softmax(adversarial, dim=1), target, reduction=reduction)
    return F.cross_entropy(adversarial if adversarial_ce else natural, y) + beta * kl


def _check_trades_loss(run: Runner, hidden: bool) -> int:
    # A trained model, whose predictions the perturbation moves (an untrained one's KL is ~0).
    settings = [(zoo_model("mnist-standard-mlp"), 16, 0.15, 6.0)]
    if hidden:
        settings += [(zoo_model("mnist-standard-mlp"), 9, 0.3, 1.0), (mlp(22), 5, 0.05, 0.0)]
    for i, (model, n, eps, beta) in enumerate(settings):
        model.train()
        x, y = digits(n, 95 + i)
        x_adv = (x + eps * torch.sign(torch.randn(x.shape, generator=gen(96 + i)))).clamp(0, 1)
        copies = (x.clone(), x_adv.clone(), y.clone())
        model.zero_grad()
        got = run(model, x, x_adv, y, beta, backward=True)
        for before, after, name in zip(copies, (x, x_adv, y), ("x", "x_adv", "y")):
            unchanged(run.item, before, after, name)
        scalar_loss(run.item, got, run.last.requires_grad)
        got_grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad()
        want = _trades(model, x, x_adv, y, beta)
        want.backward()
        want_grads = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad()
        with torch.no_grad():
            if math.isclose(got.item(), want.item(), rel_tol=1e-4, abs_tol=1e-6):
                if beta > 0 and not all(matches(a, b, atol=1e-6, rtol=1e-3) for a, b in zip(got_grads, want_grads)):
                    fail(run.item, "the value is right but its gradient is not: TRADES trains through both "
                                   "arguments of the KL term, so do not detach the natural probabilities")
                continue
            where = f"loss {got.item():.6f}, expected {want.item():.6f}"
            hints = [({"reverse": True}, "the KL divergence goes from the natural to the adversarial prediction, "
                                          "KL(p(x) || p(x_adv)): "
                                          "F.kl_div(log_softmax(model(x_adv)), softmax(model(x)))"),
                     ({"reduction": "mean"}, "reduction='mean' also divides by the number of classes; TRADES "
                                             "averages the per-example KL over the batch (reduction='batchmean')"),
                     ({"reduction": "sum"}, "you summed the KL over the batch; average it over the examples "
                                            "(reduction='batchmean')"),
                     ({"adversarial_ce": True}, "the cross-entropy term is on the natural images x; only the KL "
                                                "term looks at x_adv")]
            for keywords, hint in hints:
                if math.isclose(got.item(), _trades(model, x, x_adv, y, beta, **keywords).item(), rel_tol=1e-4,
                                abs_tol=1e-6):
                    fail(run.item, f"{where}: {hint}")
            fail(run.item, f"{where}: cross-entropy on x plus beta times the batch-averaged KL(p(x) || p(x_adv))")
    return len(settings)
