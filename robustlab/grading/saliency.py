"""Checks of the saliency assignment: the gradient map, SmoothGrad, Integrated Gradients."""

from __future__ import annotations

import math

import numpy as np  # noqa: F401
import torch
import torch.nn.functional as F
from scipy.stats import norm as normal
from torch import Tensor

from ..testing import ThresholdRelu
from .compare import as_tensor, close, fail, matches, unchanged
from .inputs import cnn, digits, gen, mlp, zoo_model
from .runners import Runner


def exact_smoothgrad(model: ThresholdRelu, x: Tensor, target: Tensor, sigma: float) -> Tensor:
    """SmoothGrad of ``ThresholdRelu`` in closed form: ``W[target, i] Phi((x_i - t_i) / sigma)``."""
    phi = torch.from_numpy(normal.cdf(((x.flatten(1) - model.t) / sigma).numpy())).to(x.dtype)
    return (model.weight.detach()[target] * phi).view_as(x)


def _check_gradient(run: Runner, hidden: bool) -> int:
    from .. import saliency

    cases = [(cnn(11), *digits(8, 110))]
    if hidden:
        cases += [(mlp(12), *digits(5, 111)), (zoo_model("mnist-pgd-linf-0.3"), *digits(6, 112))]
    for i, (model, x, y) in enumerate(cases):
        target = (y + i) % 10  # not always the label, not always the prediction
        x0 = x.clone()
        got = run(model, x, target)
        unchanged(run.item, x0, x, "x")
        got = as_tensor(run.item, got, x, "your map")
        want = saliency.gradient(model, x, target)
        if matches(got, want, atol=1e-6, rtol=1e-4):
            continue
        if matches(got, want.abs(), atol=1e-6, rtol=1e-4):
            fail(run.item, "you returned |gradient|; return the signed gradient (take abs() only when plotting)")
        predicted = model(x).argmax(1)
        if not torch.equal(predicted, target) and matches(got, saliency.gradient(model, x, predicted), atol=1e-6):
            fail(run.item, "you explained the predicted class; explain the class given in `target`")
        x_in = x.clone().requires_grad_(True)
        logp = F.log_softmax(model(x_in), 1).gather(1, target[:, None]).sum()
        if matches(got, torch.autograd.grad(logp, x_in)[0], atol=1e-6):
            fail(run.item, "you differentiated the log-probability (or the loss); the gradient map uses the "
                           "target class's logit, before the softmax")
        close(run.item, got, want, atol=1e-6, what="your map",
              hint="Expected d logit[target] / dx for each example")
    return len(cases)


def _check_noisy_inputs(run: Runner, model: ThresholdRelu, x: Tensor, sigma: float, samples: int) -> None:
    """What the model received must be ``samples`` noisy copies of each example with noise of
    standard deviation ``sigma`` (one clean pass besides is allowed): a map computed without
    them (from the test model's parameters, say) or from other noise fails here."""
    seen, rows = run.observed(model), len(x)
    clean = x.double().square().sum().item()
    if 0 < seen.distinct <= rows and math.isclose(seen.squares, clean, rel_tol=1e-9):
        fail(run.item, "your model only received x itself, so your map is the plain gradient: average the gradient "
                       "over noisy copies x + N(0, sigma^2) of the input")
    if seen.distinct < samples * rows:
        fail(run.item, f"your model received {seen.distinct} different inputs for {rows} examples; SmoothGrad "
                       f"averages the gradient over samples={samples} noisy copies x + sigma * randn of each "
                       "example, each passed through the model: draw fresh noise for every sample")
    if seen.distinct > (samples + 1) * rows:
        fail(run.item, f"your model received {seen.distinct} different inputs for {rows} examples; use "
                       f"samples={samples} noisy copies of each")
    if seen.lowest >= 0 and seen.highest <= 1:
        fail(run.item, "every noisy input your model received lay in [0, 1]: the noise x + sigma * randn is not "
                       "clamped (SmoothGrad averages over the Gaussian around x)")
    copies = seen.distinct / rows
    # E[sum of squares of one copy of the batch] = sum x^2 + (number of entries) sigma^2.
    variance = (seen.squares / copies - clean) / x.numel()
    if not 0.8 <= variance / sigma ** 2 <= 1.25:
        fail(run.item, f"the noisy inputs your model received deviate from x with a standard deviation of about "
                       f"{math.sqrt(max(variance, 0.0)):.3g}; expected sigma={sigma:g}: use x + torch.randn_like(x) "
                       "* sigma, not clamped")


def _check_smoothgrad(run: Runner, hidden: bool) -> int:
    cases = [((1, 4, 4), 0.2, 2000)] + ([((2, 3, 3), 0.5, 3000)] if hidden else [])
    for j, (shape, sigma, samples) in enumerate(cases):
        model = ThresholdRelu(shape, 3, seed=120 + j)
        x = torch.rand((4, *shape), generator=gen(130 + j))
        target = torch.tensor([0, 1, 2, 1])
        x0 = x.clone()
        got = run(model, x, target, sigma=sigma, samples=samples)
        unchanged(run.item, x0, x, "x")
        got = as_tensor(run.item, got, x, "your map")
        _check_noisy_inputs(run, model, x, sigma, samples)
        want = exact_smoothgrad(model, x, target, sigma)
        scale = model.weight[target].abs().view_as(x)
        # One Bernoulli average per pixel: standard error <= 0.5 |W| / sqrt(samples); allow 5.5 of them.
        tol = 5.5 * 0.5 * scale / math.sqrt(samples) + 1e-6
        if ((got - want).abs() <= tol).all():
            continue
        plain = exact_smoothgrad(model, x, target, 1e-6)
        if matches(got, plain, atol=1e-5):
            fail(run.item, "your map equals the plain gradient: average the gradient over noisy copies "
                           "x + N(0, sigma^2) of the input")
        ratio = (got.abs().sum() / want.abs().sum()).item()
        if ratio > samples / 3:
            fail(run.item, f"your map is about {ratio:.0f} times too large: average over the samples, don't sum")
        for wrong, name in ((sigma ** 2, "sigma^2 (a variance)"), (math.sqrt(sigma), "sqrt(sigma)")):
            if ((got - exact_smoothgrad(model, x, target, wrong)).abs() <= tol).all():
                fail(run.item, f"your noise has standard deviation {name}; use torch.randn_like(x) * sigma")
        worst = ((got - want).abs() / tol).max().item()
        fail(run.item, f"your SmoothGrad differs from the exact expectation by up to {worst:.1f} times the "
                       f"sampling tolerance (sigma={sigma:g}, {samples} samples). Average d logit[target] / dx "
                       "over x + sigma * randn, with fresh noise per sample")
    return len(cases)


def _check_integrated_gradients(run: Runner, hidden: bool) -> int:
    from .. import saliency

    cases = [(mlp(14), *digits(4, 140), None)]
    if hidden:
        cases += [(cnn(15), *digits(3, 141), 0.5), (mlp(16), torch.rand(2, 1, 28, 28, generator=gen(142)),
                                                     torch.tensor([3, 7]), "random")]
    steps = 128
    for i, (model, x, y, baseline) in enumerate(cases):
        if baseline == "random":
            baseline = torch.rand(x.shape, generator=gen(143))
        b = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline).expand_as(x)
        x0 = x.clone()
        got = run(model, x, y, baseline=b, steps=steps)
        unchanged(run.item, x0, x, "x")
        got = as_tensor(run.item, got, x, "your attribution")
        want = saliency.integrated_gradients(model, x, y, baseline=b, steps=steps)
        rel = ((got - want).flatten(1).norm(dim=1) / want.flatten(1).norm(dim=1).clamp_min(1e-12)).max().item()
        if rel <= 0.03:
            continue
        with torch.no_grad():
            gap = (model(x).gather(1, y[:, None]) - model(b).gather(1, y[:, None])).squeeze(1)
        total = got.flatten(1).sum(1)
        grad = saliency.gradient(model, x, y)
        if matches(got, grad, atol=1e-5, rtol=1e-2) or matches(got, grad * (x - b), atol=1e-5, rtol=1e-2):
            fail(run.item, "your attribution uses the gradient at x only; integrate the gradient along the "
                           "straight path from the baseline to x (average it over `steps` points)")
        if (total / gap).sub(steps).abs().max() < 0.1 * steps:
            fail(run.item, f"your attributions sum to about {steps} times f(x) - f(baseline): average the "
                           "path gradients over the steps, don't sum them")
        if matches(got * (x - b), want, atol=1e-4, rtol=0.03):
            fail(run.item, "multiply the averaged path gradient by (x - baseline)")
        fail(run.item, f"your attribution differs from the reference by {100 * rel:.1f} % (relative L2, worst "
                       f"example; {steps} steps). Completeness check: your attributions sum to "
                       f"{total.tolist()} while f(x) - f(baseline) is {gap.tolist()}")
    return len(cases)
