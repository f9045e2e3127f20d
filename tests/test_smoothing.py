"""Randomized smoothing: exact constants, the linear model's closed form, invariants, bad input."""

import pytest
import torch
from torch import nn

from robustlab import smoothing as sm
from robustlab.testing import LinearBinary, tiny_cnn

from .conftest import require_peer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def linear_at_margin(radius, shape=(1, 8, 8), seed=0):
    """A linear two-class model and an image x whose exact L2 distance to the boundary is radius.

    For f(x) = w.x + b the smoothed classifier predicts class 1 with probability
    Phi(f(x) / (sigma ||w||)), so its exact certified radius is f(x) / ||w||.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(shape, generator=g, dtype=torch.float64)
    b = radius * w.norm() - (w * x).sum()
    return LinearBinary(w, b=float(b)), x


class Alternating(nn.Module):
    """Ignores its input and predicts 0, 1, 0, 1, ... down the batch: an exact two-way tie."""

    def forward(self, x):
        cls = torch.arange(x.shape[0], device=x.device) % 2
        return nn.functional.one_hot(cls, 3).to(x.dtype)


# --- constants of the paper ---------------------------------------------------------------------

@pytest.mark.parametrize("count,n,p_lower,radius", [
    (100, 100, 0.933254, 1.5005),
    (60_000, 100_000, 0.595201, 0.2409),
])
@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_bound_and_radius_for_fixed_counts(count, n, p_lower, radius, sigma):
    assert sm.lower_confidence_bound(count, n, alpha=0.001) == pytest.approx(p_lower, abs=5e-7)
    cert = sm.certificate_from_counts(7, count, n, sigma=sigma, alpha=0.001)
    assert cert.prediction == 7
    assert cert.radius == pytest.approx(radius * sigma, abs=5e-5 * sigma)


def test_barely_above_half_abstains():
    # 50.1 % is not significantly above 1/2 at alpha = 0.001 with 100,000 samples.
    assert sm.lower_confidence_bound(50_100, 100_000, alpha=0.001) < 0.5
    assert sm.certificate_from_counts(2, 50_100, 100_000, sigma=0.5, alpha=0.001) == (sm.ABSTAIN, 0.0)


def test_zero_count_has_zero_bound():
    assert sm.lower_confidence_bound(0, 10, alpha=0.01) == 0.0


def test_bound_agrees_with_statsmodels():
    proportion = require_peer("statsmodels.stats.proportion")
    for count, n in [(1, 1), (5, 10), (99, 100), (700, 1000), (99_999, 100_000)]:
        for alpha in (0.001, 0.05):
            expected = proportion.proportion_confint(count, n, alpha=2 * alpha, method="beta")[0]
            assert sm.lower_confidence_bound(count, n, alpha=alpha) == pytest.approx(expected, rel=1e-10)


# --- the linear classifier: closed form ---------------------------------------------------------

@pytest.mark.parametrize("exact", [0.1, 0.5, 1.0])
def test_linear_radius_is_below_and_close_to_the_exact_one(exact):
    sigma = 0.5
    model, x = linear_at_margin(exact)
    cert = sm.certify(model, x, sigma=sigma, n0=100, n=100_000, alpha=0.001, batch_size=10_000,
                      generator=gen(1))
    assert cert.prediction == 1
    assert cert.radius <= exact
    # The gap comes only from the confidence bound: 3.09 binomial standard deviations.
    assert cert.radius >= 0.95 * exact if exact >= 0.5 else cert.radius >= exact - 0.02


def test_linear_radius_exceeds_the_exact_one_at_most_alpha_often():
    """The guarantee itself: P(radius > exact radius) <= alpha, checked over 400 certifications."""
    sigma, alpha, exact = 0.5, 0.05, 0.3
    model, x = linear_at_margin(exact)
    g = gen(2)
    wrong = 0
    for _ in range(400):
        cert = sm.certify(model, x, sigma=sigma, n0=10, n=200, alpha=alpha, generator=g)
        wrong += cert.prediction == 1 and cert.radius > exact
        wrong += cert.prediction == 0  # the smoothed classifier predicts 1 here
    # Expected at most 20 (alpha * 400); 34 would be 3.3 standard deviations above that.
    assert wrong <= 34
    # A bound that ignored the confidence level (the plug-in estimate) would fail about half the time.


def test_predict_matches_the_closed_form_class():
    for exact, cls in [(0.4, 1), (-0.4, 0)]:
        model, x = linear_at_margin(exact)
        assert sm.predict(model, x, sigma=0.5, n=2000, alpha=0.001, generator=gen(3)) == cls


# --- abstention ---------------------------------------------------------------------------------

def test_exact_tie_abstains():
    x = torch.full((1, 4, 4), 0.5)
    assert sm.predict(Alternating(), x, sigma=0.1, n=1000, alpha=0.001, batch_size=100) == sm.ABSTAIN
    assert sm.certify(Alternating(), x, sigma=0.1, n0=100, n=1000, alpha=0.001, batch_size=100) == (sm.ABSTAIN, 0.0)


def test_point_on_the_boundary_abstains():
    model, x = linear_at_margin(0.0)
    assert sm.predict(model, x, sigma=0.5, n=10_000, alpha=0.001, generator=gen(4)) == sm.ABSTAIN
    assert sm.certify(model, x, sigma=0.5, n0=100, n=10_000, alpha=0.001, generator=gen(4)).prediction == sm.ABSTAIN


# --- invariants ---------------------------------------------------------------------------------

def test_counts_sum_to_n_and_are_batch_size_invariant():
    # 5 x 5 = 25 values per image: CPU normal_ fills in blocks of 16, so cutting the noise
    # stream at batch boundaries would change the values; it must be cut at fixed blocks.
    model = tiny_cnn(num_classes=5, size=5).eval()
    x = torch.rand(1, 5, 5, generator=gen(5))
    reference = sm.sample_counts(model, x, sigma=0.5, n=1234, batch_size=1234, generator=gen(6))
    assert int(reference.sum()) == 1234
    assert sm.NOISE_BLOCK < 1234  # so that some batch sizes below cut across noise blocks
    assert int((reference > 0).sum()) >= 2  # a non-trivial distribution, or the test says nothing
    for batch_size in (7, 100, 499, 500, 501, 1000, 5000):
        counts = sm.sample_counts(model, x, sigma=0.5, n=1234, batch_size=batch_size, generator=gen(6))
        assert torch.equal(counts, reference), batch_size


def test_certify_is_batch_size_invariant_and_deterministic():
    model = tiny_cnn(num_classes=5, size=5).eval()
    x = torch.rand(1, 5, 5, generator=gen(7))
    counts = sm.sample_counts(model, x, sigma=1.0, n=2000, generator=gen(8))
    assert int((counts > 100).sum()) >= 2  # a real contest between classes, so the radius varies
    certs = {bs: sm.certify(model, x, sigma=1.0, n0=50, n=2000, alpha=0.01, batch_size=bs,
                            generator=gen(8)) for bs in (9, 64, 700, 4000)}
    assert len(set(certs.values())) == 1
    assert certs[64].prediction != sm.ABSTAIN and certs[64].radius > 0
    again = sm.certify(model, x, sigma=1.0, n0=50, n=2000, alpha=0.01, batch_size=64, generator=gen(8))
    assert again == certs[64]
    other = sm.certify(model, x, sigma=1.0, n0=50, n=2000, alpha=0.01, batch_size=64, generator=gen(9))
    assert other.radius != certs[64].radius  # another noise draw gives another count


def test_no_side_effects():
    model = tiny_cnn(num_classes=4, size=6).train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 6, 6, generator=gen(10))
    x_copy = x.clone()
    sm.certify(model, x, sigma=0.5, n0=20, n=300, alpha=0.01, batch_size=64)
    sm.predict(model, x, sigma=0.5, n=300, alpha=0.01)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert torch.equal(x, x_copy) and not x.requires_grad


def test_counts_use_eval_mode():
    """Dropout in train mode would randomise the base classifier; eval mode makes it deterministic."""
    model = tiny_cnn(num_classes=4, size=6, dropout=0.9).train()
    x = torch.rand(1, 6, 6, generator=gen(11))
    expected = sm.sample_counts(model.eval(), x, sigma=0.3, n=400, generator=gen(12))
    model.train()
    assert torch.equal(sm.sample_counts(model, x, sigma=0.3, n=400, generator=gen(12)), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_device_follows_x(device):
    model = tiny_cnn(num_classes=3, size=4).eval().to(device)
    x = torch.rand(1, 4, 4, device=device)
    counts = sm.sample_counts(model, x, sigma=0.2, n=100, generator=gen(13, device))
    assert counts.device.type == device


def test_noise_is_gaussian_with_sigma_and_unclamped():
    """The noisy copies are x + N(0, sigma^2): check the moments the model sees."""
    seen = []

    class Spy(nn.Module):
        def forward(self, z):
            seen.append(z.clone())
            return torch.zeros(z.shape[0], 2)

    x = torch.full((1, 4, 4), 0.9)
    sm.sample_counts(Spy(), x, sigma=0.5, n=4000, batch_size=1000, generator=gen(14))
    z = torch.cat(seen) - 0.9
    assert z.shape == (4000, 1, 4, 4)
    assert abs(float(z.mean())) < 0.01
    assert float(z.std()) == pytest.approx(0.5, rel=0.01)
    assert float(z.max()) > 0.1 + 1.0  # no clamp to [0, 1]


# --- datasets and summaries ---------------------------------------------------------------------

def test_certify_dataset_matches_certify_one_by_one():
    model = tiny_cnn(num_classes=3, size=4).eval()
    x = torch.rand(5, 1, 4, 4, generator=gen(15))
    y = torch.tensor([0, 1, 2, 0, 1])
    res = sm.certify_dataset(model, x, y, sigma=0.3, n0=20, n=500, alpha=0.01, generator=gen(16),
                             progress=False)
    g = gen(16)
    one = [sm.certify(model, x[i], sigma=0.3, n0=20, n=500, alpha=0.01, generator=g) for i in range(5)]
    assert res.prediction.tolist() == [c.prediction for c in one]
    assert res.radius.tolist() == [c.radius for c in one]
    assert res.correct.tolist() == [c.prediction == int(y[i]) for i, c in enumerate(one)]
    assert len(res) == 5 and res.index.tolist() == list(range(5))
    assert bool((res.time > 0).all())


def test_certified_accuracy_and_acr_by_hand(tmp_path):
    res = sm.CertificationResults(
        index=torch.arange(4), label=torch.tensor([0, 1, 2, 3]), prediction=torch.tensor([0, 1, -1, 2]),
        radius=torch.tensor([0.5, 1.5, 0.0, 2.0], dtype=torch.float64),
        correct=torch.tensor([True, True, False, False]), time=torch.ones(4, dtype=torch.float64),
        sigma=0.5, n0=100, n=1000, alpha=0.001)
    acc = sm.certified_accuracy(res, [0.0, 0.5, 1.0, 2.0])
    assert acc.tolist() == [0.5, 0.5, 0.25, 0.0]
    assert float(sm.certified_accuracy(res, 0.0)) == 0.5
    assert sm.average_certified_radius(res) == pytest.approx((0.5 + 1.5) / 4)
    res.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "index,label,prediction,radius,correct,time,sigma,n0,n,alpha" and len(lines) == 5
    back = sm.CertificationResults.from_csv(tmp_path / "r.csv")
    for name in back.columns:
        assert torch.equal(getattr(back, name), getattr(res, name)), name
    assert (back.sigma, back.n0, back.n, back.alpha) == (0.5, 100, 1000, 0.001)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        sm.CertificationResults.from_csv(tmp_path / "bad.csv")


def test_plot_draws_one_monotone_curve_per_run():
    import matplotlib
    matplotlib.use("Agg")
    res = sm.CertificationResults(
        index=torch.arange(3), label=torch.tensor([0, 1, 2]), prediction=torch.tensor([0, 1, 2]),
        radius=torch.tensor([0.2, 0.9, 1.4], dtype=torch.float64), correct=torch.ones(3, dtype=torch.bool),
        time=torch.ones(3, dtype=torch.float64), sigma=0.5, n0=100, n=1000, alpha=0.001)
    ax = sm.plot_certified_accuracy({"a": res, "b": res}, max_radius=2.0)
    assert len(ax.lines) == 2
    xs, ys = ax.lines[0].get_data()
    assert ys[0] == 1.0 and ys[-1] == 0.0 and all(a >= b for a, b in zip(ys, ys[1:]))
    assert ys[list(xs).index(min(xs, key=lambda r: abs(r - 1.0)))] == pytest.approx(1 / 3)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=0.0), "sigma must be > 0"),
    (dict(sigma=-0.5), "sigma must be > 0"),
    (dict(n0=0), "n0 must be >= 1"),
    (dict(n=0), "n must be >= 1"),
    (dict(alpha=0.0), "alpha must be > 0"),
    (dict(alpha=1.0), r"alpha must lie in \(0, 1\)"),
    (dict(alpha=1.5), r"alpha must lie in \(0, 1\)"),
    (dict(batch_size=0), "batch_size must be >= 1"),
])
def test_bad_settings_are_rejected(kwargs, match):
    args = dict(sigma=0.25, n0=10, n=100, alpha=0.001)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sm.certify(tiny_cnn(num_classes=2, size=4), torch.rand(1, 4, 4), **args)


def test_bad_images_are_rejected():
    model = tiny_cnn(num_classes=2, size=4)
    with pytest.raises(ValueError, match=r"one image of shape \(C, H, W\).*batch dimension.*x\[0\]"):
        sm.certify(model, torch.rand(1, 1, 4, 4), sigma=0.25, n0=10, n=100, alpha=0.001)
    with pytest.raises(ValueError, match=r"\[0, 1\].*Normalize"):
        sm.predict(model, torch.rand(1, 4, 4) * 3, sigma=0.25, n=100, alpha=0.001)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sm.certify(model, [[0.0]], sigma=0.25, n0=10, n=100, alpha=0.001)
    with pytest.raises(TypeError, match="n must be an int"):
        sm.predict(model, torch.rand(1, 4, 4), sigma=0.25, n=100.0, alpha=0.001)
    with pytest.raises(ValueError, match="count must be <= n"):
        sm.lower_confidence_bound(11, 10, alpha=0.01)


def test_agrees_with_art_on_the_linear_model():
    """ART's PyTorchRandomizedSmoothing runs the same algorithm with its own noise: at n = 100,000
    both radii lie just below the exact one and within sampling error of each other."""
    rs = require_peer("art.estimators.certification.randomized_smoothing")
    exact, sigma = 0.5, 0.5
    model64, x64 = linear_at_margin(exact)
    model = LinearBinary(model64.w.detach().float(), b=model64.b.item()).eval()
    x = x64.float()
    theirs = rs.PyTorchRandomizedSmoothing(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape),
                                           nb_classes=2, device_type="cpu", sample_size=100, scale=sigma,
                                           alpha=0.001)
    import numpy as np
    np.random.seed(0)
    art_pred, art_radius = theirs.certify(x[None].numpy(), n=100_000, batch_size=10_000)
    ours = sm.certify(model, x, sigma=sigma, n0=100, n=100_000, alpha=0.001, batch_size=10_000,
                      generator=gen(17))
    assert int(art_pred[0]) == ours.prediction == 1
    assert ours.radius <= exact and float(art_radius[0]) <= exact
    # One binomial standard deviation of the count moves the radius by ~0.002 here.
    assert ours.radius == pytest.approx(float(art_radius[0]), abs=0.01)
