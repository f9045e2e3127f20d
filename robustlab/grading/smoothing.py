"""Checks of the certification assignment: sample counts, the Clopper-Pearson bound, CERTIFY, the
certified-accuracy curve and the ACR, and interval bounds through Linear and ReLU layers."""

from __future__ import annotations

import math

import torch
from scipy.stats import beta as beta_dist
from scipy.stats import norm as normal
from torch import Tensor, nn

from ..testing import LinearBinary
from .compare import as_tensor, close, fail, matches, unchanged
from .inputs import digits, gen
from .runners import Runner


def _score(model: LinearBinary, x: Tensor) -> float:
    return (x.flatten() @ model.w.detach().flatten() + model.b.detach()).item()


def p_class1(model: LinearBinary, x: Tensor, sigma: float) -> float:
    """The smoothed classifier's probability of class 1 at x (exact for a linear model)."""
    return float(normal.cdf(_score(model, x) / (sigma * model.w.detach().norm().item())))


def distance(model: LinearBinary, x: Tensor) -> float:
    """The exact L2 distance from x to the linear model's boundary."""
    return abs(_score(model, x)) / model.w.detach().norm().item()


def _check_sample_counts(run: Runner, hidden: bool) -> int:
    w = torch.tensor([1.0, -2.0, 0.5, 1.0])
    # x near 0 with sigma 0.5: clamping the noisy images to [0, 1] would change the probabilities.
    cases = [(torch.tensor([0.05, 0.1, 0.0, 0.2]).view(1, 2, 2), 0.5, 4000, 1000)]
    if hidden:
        cases += [(torch.tensor([0.9, 0.1, 0.3, 0.0]).view(1, 2, 2), 1.0, 3000, 64),
                  (torch.tensor([0.2, 0.2, 0.2, 0.2]).view(1, 2, 2), 0.25, 1001, 1000)]
    for x, sigma, n, batch_size in cases:
        model = LinearBinary(w.view(1, 2, 2), 0.1).eval()
        x0 = x.clone()
        got = run(model, x, sigma=sigma, n=n, num_classes=2, batch_size=batch_size)
        unchanged(run.item, x0, x, "x")
        if not isinstance(got, Tensor) or got.shape != (2,):
            fail(run.item, f"return a (num_classes,) tensor of counts, got "
                           f"{type(got).__name__}{'' if not isinstance(got, Tensor) else tuple(got.shape)}")
        if got.dtype.is_floating_point:
            fail(run.item, f"counts should be integers (torch.int64), got {got.dtype}")
        if int(got.sum()) != n:
            fail(run.item, f"your counts add up to {int(got.sum())}, expected n={n} (one class per noisy sample)")
        seen = run.observed(model)
        if seen.distinct == 1:
            fail(run.item, "every image your model classified was the same: did you add the noise?")
        if seen.lowest >= 0 and seen.highest <= 1:
            fail(run.item, f"every noisy image your model classified lay in [0, 1]: the Gaussian noise (standard "
                           f"deviation sigma={sigma:g}, added to x in pixel space) is not clamped")
        if seen.distinct < n:
            fail(run.item, f"your model classified {seen.distinct} different noisy images for n={n} samples: draw "
                           "fresh noise for every sample (not the same draw for every batch)")
        if seen.distinct > n + 1:
            fail(run.item, f"your model classified {seen.distinct} different noisy images for n={n} samples: "
                           "classify exactly n noisy copies of x")
        if seen.distinct == n and len(seen.votes) == 2 and got.tolist() != seen.votes:
            fail(run.item, f"your counts {got.tolist()} differ from the classes the model returned for the {n} "
                           f"noisy images it classified ({seen.votes}): count each sample's top class once")
        largest = seen.largest_batch
        if largest > batch_size:
            fail(run.item, f"you passed {largest} noisy images to the model at once; use batches "
                           f"of at most batch_size={batch_size} (memory)")
        p = p_class1(model, x, sigma)
        k = int(got[1])
        sd = math.sqrt(n * p * (1 - p))
        if abs(k - n * p) > 5 * sd + 1:
            hint = ""
            if k in (0, n):
                hint = " Every sample got the same class: did you add the noise?"
            fail(run.item, f"class 1 was counted {k} times in {n} samples; with Gaussian noise of standard "
                           f"deviation sigma={sigma:g} (added to x in pixel space, not clamped) expect "
                           f"{n * p:.0f} +- {sd:.0f}.{hint}")
    return len(cases)


def _check_lower_confidence_bound(run: Runner, hidden: bool) -> int:
    cases = [(100, 100, 0.001), (60_000, 100_000, 0.001), (7, 10, 0.05)]
    if hidden:
        cases += [(0, 50, 0.01), (1, 1, 0.1), (999, 1000, 1e-4), (500, 1000, 0.5), (3, 100_000, 0.001)]
    for k, n, alpha in cases:
        got = run(k, n, alpha)
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail(run.item, f"return a float, got {type(got).__name__}")
        want = 0.0 if k == 0 else float(beta_dist.ppf(alpha, k, n - k + 1))
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        where = f"for count={k}, n={n}, alpha={alpha:g} you returned {got!r}, expected {want:.6g}"
        if math.isnan(got):
            fail(run.item, f"{where}: with count=0 the bound is 0 (the Beta quantile is undefined there)")
        if k > 0 and math.isclose(got, float(beta_dist.ppf(alpha / 2, k, n - k + 1)), rel_tol=1e-6):
            fail(run.item, f"{where}: you used alpha/2, the two-sided interval; the certificate needs the "
                           "ONE-sided lower bound at level alpha, Beta(alpha; count, n - count + 1)")
        if k < n and math.isclose(got, float(beta_dist.ppf(1 - alpha, k + 1, n - k)), rel_tol=1e-6):
            fail(run.item, f"{where}: that is the upper bound; use the lower one, Beta(alpha; count, n - count + 1)")
        phat = k / n
        wald = phat - normal.ppf(1 - alpha) * math.sqrt(phat * (1 - phat) / n)
        if math.isclose(got, wald, rel_tol=1e-4, abs_tol=1e-9):
            fail(run.item, f"{where}: that is the normal approximation, which is not a valid bound for "
                           "proportions near 0 or 1; use the exact Clopper–Pearson bound (a Beta quantile)")
        fail(run.item, f"{where} (the one-sided Clopper–Pearson bound, scipy.stats.beta.ppf(alpha, count, "
                       "n - count + 1))")
    return len(cases)


def _check_certify(run: Runner, hidden: bool) -> int:
    w = torch.tensor([2.0, -1.0, 1.0, 0.0])
    sigma, n0, n, alpha = 0.25, 100, 2000, 0.001
    # (x, what): an easy point (every sample class 1), a moderate one, one on the boundary.
    cases = [(torch.tensor([1.0, 0.0, 1.0, 0.0]), "easy", n0), (torch.tensor([0.3, 0.2, 0.2, 0.5]), "moderate", n0),
             (torch.tensor([0.1, 0.1, 0.0, 0.0]), "boundary", n0)]
    if hidden:
        # With few selection samples (n0=10) the estimate count/n and the lower bound differ by more
        # than the selection samples can explain: a radius from count/n is caught below.
        cases += [(torch.tensor([1.0, 0.0, 0.9, 0.3]), "easy", n0),
                  (torch.tensor([0.25, 0.15, 0.0, 1.0]), "moderate", n0),
                  (torch.tensor([0.3, 0.2, 0.2, 0.5]), "moderate", 10)]
    for x, what, n0 in cases:
        x = x.view(1, 2, 2)
        b = -0.1 if what == "boundary" else 0.1
        model = LinearBinary(w.view(1, 2, 2), b).eval()
        model_eval_state = model.training
        got = run(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=500)
        received = run.observed(model).distinct
        if received in (n0, n):
            fail(run.item, f"your model classified {received} different noisy images: CERTIFY draws n0={n0} "
                           f"samples to select the class and n={n} FRESH samples to estimate p_A (n0 + n = "
                           f"{n0 + n}); reusing the selection samples biases the bound")
        if not n0 + n <= received <= n0 + n + 1:
            fail(run.item, f"your model classified {received} different noisy images; CERTIFY uses n0={n0} "
                           f"selection samples and n={n} estimation samples ({n0 + n} in all)")
        if model.training != model_eval_state:
            fail(run.item, "your function changed the model's mode; leave it as given")
        if not (isinstance(got, tuple) and len(got) == 2):
            fail(run.item, f"return a pair (prediction, radius), got {got!r}")
        prediction, radius = int(got[0]), float(got[1])
        score = _score(model, x)
        true_class, exact = int(score > 0), distance(model, x)
        if what == "boundary":
            if prediction != -1:
                fail(run.item, f"a point on the decision boundary (p_A = 0.5) must abstain (prediction -1), you "
                               f"certified class {prediction} with radius {radius:.3f}: abstain when the lower "
                               "bound on p_A is below 1/2")
            continue
        if prediction != true_class:
            fail(run.item, f"predicted {prediction} for a point the smoothed classifier puts in class "
                           f"{true_class} with probability "
                           f"{max(p_class1(model, x, sigma), 1 - p_class1(model, x, sigma)):.3f}")
        if radius < 0:
            fail(run.item, f"negative radius {radius:.3f}: abstain (-1) instead when p_A_lower < 1/2")
        votes = run.observed(model).votes
        if len(votes) == 2:
            # The model's votes on the n0 + n images bound the count the student's n estimation
            # samples gave (it is at most min(n, votes)); so they bound any sound radius.
            from ..smoothing import lower_confidence_bound

            p_high = lower_confidence_bound(min(votes[prediction], n), n, alpha=alpha)
            r_high = sigma * normal.ppf(p_high) if p_high > 0.5 else 0.0
            if radius > r_high + 1e-6:
                fail(run.item, f"radius {radius:.4f} exceeds what any one-sided lower bound on p_A allows from the "
                               f"votes your samples got ({r_high:.4f}): use sigma * Phi^-1(p_A_lower) with the "
                               f"Clopper-Pearson lower bound at alpha={alpha:g}, not the estimate count / n")
        if what == "easy":
            cap = sigma * normal.ppf(alpha ** (1 / n))
            cap_n0 = sigma * normal.ppf(alpha ** (1 / n0))
            if math.isclose(radius, cap_n0, rel_tol=1e-3):
                fail(run.item, f"radius {radius:.4f} is the bound from the n0={n0} selection samples; estimate "
                               f"p_A from n={n} fresh samples (expected {cap:.4f})")
            if not math.isclose(radius, cap, rel_tol=1e-3):
                fail(run.item, f"when all n={n} samples vote for the class the radius is "
                               f"sigma * Phi^-1(alpha^(1/n)) = {cap:.4f}; you returned {radius:.4f}")
        elif not (0.7 * exact <= radius <= exact * 1.02):
            fail(run.item, f"radius {radius:.4f} for a point at exact L2 distance {exact:.4f} from the boundary; a "
                           f"sound certificate is a little below it (sigma * Phi^-1(p_A_lower)), expected "
                           f"{0.7 * exact:.3f} .. {exact:.3f}")
    return len(cases)


# --- Certification summaries: the certified-accuracy curve and the ACR ------------------------------

def _certificates(hidden: bool) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(predictions, radii, labels, grid) cases. Each has an abstention (-1), a wrong prediction
    with a large radius, a correct one certified at radius exactly 0 (p_A_lower = 1/2) and grid
    points equal to radii (the curve counts radius >= r)."""
    cases = [(torch.tensor([3, 1, -1, 2, 3, 0]), torch.tensor([0.5, 0.2, 0.0, 1.0, 0.0, 0.75]),
              torch.tensor([3, 1, 4, 5, 3, 0]), torch.tensor([0.0, 0.25, 0.5, 1.0]))]
    if hidden:
        g = gen(60)
        labels = torch.randint(0, 10, (300,), generator=g)
        predictions = torch.where(torch.rand(300, generator=g) < 0.8, labels, torch.randint(0, 10, (300,), generator=g))
        predictions[torch.rand(300, generator=g) < 0.15] = -1
        radii = (torch.randint(0, 9, (300,), generator=g) / 8).float() * (predictions >= 0)
        cases.append((predictions, radii, labels, torch.tensor([1.0, 0.0, 0.375, 0.5, 2.0])))  # unsorted grid
        cases.append((torch.full((4,), -1), torch.zeros(4), torch.arange(4), torch.tensor([0.0])))  # all abstain
    return cases


def _results(predictions: Tensor, radii: Tensor, labels: Tensor):
    from ..smoothing import CertificationResults

    n = len(labels)
    return CertificationResults(index=torch.arange(n), label=labels.clone(), prediction=predictions.clone(),
                                radius=radii.double(), correct=predictions.eq(labels), time=torch.zeros(n,
                                dtype=torch.float64), sigma=0.25, n0=100, n=1000, alpha=0.001)


def _as_float_vector(item: str, got, length: int, what: str) -> Tensor:
    try:
        got = torch.as_tensor(got, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError):
        fail(item, f"{what}: return a tensor of {length} floats, got {type(got).__name__}")
    if got.shape != (length,):
        fail(item, f"{what}: return one value per grid radius, shape ({length},), got {tuple(got.shape)}")
    return got


def _check_certified_accuracy(run: Runner, hidden: bool) -> int:
    from ..smoothing import certified_accuracy

    cases = _certificates(hidden)
    for predictions, radii, labels, grid in cases:
        copies = [t.clone() for t in (predictions, radii, labels, grid)]
        got = run(predictions, radii, labels, grid)
        for before, after, name in zip(copies, (predictions, radii, labels, grid), ("predictions", "radii",
                                                                                      "labels", "grid")):
            unchanged(run.item, before, after, name)
        got = _as_float_vector(run.item, got, len(grid), "the certified accuracies")
        want = certified_accuracy(_results(predictions, radii, labels), grid)
        if torch.allclose(got, want, atol=1e-9):
            continue
        n, answered = len(labels), int((predictions >= 0).sum())
        correct = predictions.eq(labels)
        at = radii[:, None] >= grid[None, :]
        if torch.allclose(got, (correct[:, None] & (radii[:, None] > grid[None, :])).double().mean(0)):
            fail(run.item, "an image certified at radius exactly r counts at r: compare radius >= r, not > r")
        if torch.allclose(got, ((predictions >= 0)[:, None] & at).double().mean(0)):
            fail(run.item, "you counted images whose certified class is wrong: an image counts only when its "
                           "prediction equals its label (a certificate for the wrong class is not accuracy)")
        if answered and torch.allclose(got, (correct[:, None] & at).double().sum(0) / answered):
            fail(run.item, f"you divided by the {answered} images that were not abstained on; certified accuracy "
                           f"divides by all {n} images (an abstention counts as an error)")
        if torch.allclose(got, (correct[:, None] & at).double().sum(0)):
            fail(run.item, "those are counts; return the fraction of all images, between 0 and 1")
        fail(run.item, f"for grid {grid.tolist()} you returned {[round(v, 4) for v in got.tolist()]}, expected "
                       f"{[round(v, 4) for v in want.tolist()]}: the fraction of all images whose prediction is "
                       "their label and whose radius is >= r")
    return len(cases)


def _check_average_certified_radius(run: Runner, hidden: bool) -> int:
    from ..smoothing import average_certified_radius

    cases = _certificates(hidden)
    for predictions, radii, labels, _ in cases:
        copies = [t.clone() for t in (predictions, radii, labels)]
        got = run(predictions, radii, labels)
        for before, after, name in zip(copies, (predictions, radii, labels), ("predictions", "radii", "labels")):
            unchanged(run.item, before, after, name)
        try:
            got = float(got)
        except (TypeError, ValueError, RuntimeError):
            fail(run.item, f"return one float, got {type(got).__name__}")
        want = average_certified_radius(_results(predictions, radii, labels))
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        correct = predictions.eq(labels)
        where = f"you returned {got:.4f}, expected {want:.4f}"
        if correct.any() and math.isclose(got, radii[correct].double().mean().item(), rel_tol=1e-6):
            fail(run.item, f"{where}: that is the mean radius of the correct images; the ACR averages over ALL "
                           "images, with radius 0 for the wrong and abstained ones (it rewards accuracy too)")
        if math.isclose(got, radii.double().mean().item(), rel_tol=1e-6, abs_tol=1e-9):
            fail(run.item, f"{where}: you averaged every radius; a wrong prediction's radius counts as 0")
        fail(run.item, f"{where}: the mean over all images of the radius if the prediction is the label, else 0")
    return len(cases)


# --- Interval bound propagation through Linear and ReLU layers -------------------------------------

def _ibp_model(sizes: tuple[int, ...], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers).eval()


def _ibp_cases(hidden: bool) -> list[tuple[nn.Module, Tensor, float]]:
    g = gen(70)
    x = torch.rand(8, 1, 4, 4, generator=g)
    x[:, :, 0] = 0.0  # pixels at the edges of [0, 1]: the input box is clipped there
    x[:, :, -1] = 1.0
    cases = [(_ibp_model((16, 12, 5), 71), x, 0.1)]
    if hidden:
        digits_x, _ = digits(16, 72)
        cases += [(_ibp_model((784, 32, 32, 10), 73), digits_x, 0.05),  # two hidden layers, MNIST background
                  (_ibp_model((16, 16, 16, 16), 74), x, 0.2),  # square weights: W and W.T both fit
                  (_ibp_model((16, 12, 5), 75), x, 0.0),  # eps = 0: the bounds are the logits
                  (_ibp_model((16, 12, 5), 76), x, 0.6)]  # a box wider than [0, 1]
    return cases


def _ibp_unclipped(model: nn.Sequential, x: Tensor, eps: float, *, output_relu: bool = False) -> tuple[Tensor, Tensor]:
    """IBP without intersecting the input box with [0, 1] (or with a ReLU on the logits)."""
    lower, upper = x - eps, x + eps
    for layer in model:
        if isinstance(layer, nn.Flatten):
            lower, upper = lower.flatten(1), upper.flatten(1)
        elif isinstance(layer, nn.Linear):
            mid, rad = (upper + lower) / 2, (upper - lower) / 2
            mid, rad = mid @ layer.weight.T + layer.bias, rad @ layer.weight.abs().T
            lower, upper = mid - rad, mid + rad
        else:
            lower, upper = lower.clamp_min(0), upper.clamp_min(0)
    if output_relu:
        lower, upper = lower.clamp_min(0), upper.clamp_min(0)
    return lower, upper


def _check_interval_bounds(run: Runner, hidden: bool) -> int:
    from ..bounds import interval_bounds

    cases = _ibp_cases(hidden)
    for model, x, eps in cases:
        x0, state = x.clone(), {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            want = interval_bounds(model, x, eps=eps)
            logits = model(x)
        got = run(model, x, eps)
        unchanged(run.item, x0, x, "x")
        if any(not torch.equal(v, model.state_dict()[k]) for k, v in state.items()):
            fail(run.item, "your function changed the model's weights; read them, never write them")
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            fail(run.item, f"return a pair (lower, upper) of ({len(x)}, {logits.shape[1]}) tensors, got "
                           f"{type(got).__name__}")
        lower, upper = (as_tensor(run.item, t, logits, name) for t, name in zip(got, ("lower", "upper")))
        if matches(lower, want.lower) and matches(upper, want.upper):
            continue
        if (lower > upper + 1e-5).any():
            fail(run.item, f"lower > upper for {int((lower > upper + 1e-5).sum())} logits: propagate the box as a "
                           "centre and a radius (mid' = W mid + b, rad' = |W| rad), not lower and upper through W")
        if matches(lower, logits) and matches(upper, logits) and eps > 0:
            fail(run.item, "your bounds are the logits of x: the bounds must hold over the whole eps-ball")
        if all(matches(a, b) for a, b in zip((lower, upper), (want.lower.clamp_min(0), want.upper.clamp_min(0)))):
            fail(run.item, "you applied a ReLU to the logits; the last Linear layer has no ReLU after it")
        points = (x[None] + eps * (2 * torch.rand(64, *x.shape, generator=gen(77)) - 1)).clamp(0, 1)
        signs = torch.where(torch.rand(64, *x.shape, generator=gen(78)) < 0.5, -1.0, 1.0)
        corners = (x[None] + eps * signs).clamp(0, 1)
        with torch.no_grad():
            seen = model(torch.cat([points, corners]).flatten(0, 1)).view(128, *logits.shape)
        escaped = ((seen < lower - 1e-4) | (seen > upper + 1e-4)).any(0)
        if escaped.any():
            fail(run.item, f"your bounds are not sound: points of the eps-ball (eps={eps:g}) give logits outside "
                           f"[lower, upper] for {int(escaped.sum())} of {escaped.numel()} logits. Through a Linear "
                           "layer the centre maps to W mid + b and the radius to |W| rad; a ReLU clamps both "
                           "ends at 0")
        if all(matches(a, b) for a, b in zip((lower, upper), _ibp_unclipped(model, x, eps))):
            fail(run.item, "your input box is [x - eps, x + eps]; images live in [0, 1], so intersect it with "
                           "[0, 1] first (clamp both ends) - the bounds get tighter")
        close(run.item, lower, want.lower, what="the lower bounds", hint="Propagate mid and rad layer by layer")
        close(run.item, upper, want.upper, what="the upper bounds", hint="Propagate mid and rad layer by layer")
    return len(cases)
