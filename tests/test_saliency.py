"""Saliency: analytic models, completeness, captum agreement, invariants, side effects, bad input."""

import pytest
import torch

from robustlab import saliency as sal
from robustlab.testing import LinearBinary, Quadratic, tiny_cnn

from .conftest import require_peer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def linear(n=4, shape=(1, 5, 5), seed=0, dtype=torch.float32):
    g = gen(seed)
    w = torch.randn(shape, generator=g, dtype=dtype)
    x = torch.rand((n, *shape), generator=g, dtype=dtype)
    return LinearBinary(w, b=0.3), x, w


def cnn(num_classes=4, size=6):
    return tiny_cnn(num_classes=num_classes, size=size, dropout=0.5).eval()


# --- analytic models ----------------------------------------------------------------------------

def test_gradient_of_a_linear_logit_is_w():
    model, x, w = linear()
    torch.testing.assert_close(sal.gradient(model, x, 1), w.expand_as(x))
    torch.testing.assert_close(sal.gradient(model, x, 0), torch.zeros_like(x))  # the constant logit
    torch.testing.assert_close(sal.gradient(model, x, 1, absolute=True), w.abs().expand_as(x))


def test_loss_gradient_of_a_linear_model_by_hand():
    model, x, w = linear(dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    # Logits (0, z) with z = w.x + b: dCE/dz = softmax_1 - [y = 1], and dz/dx = w.
    z = (x * w).flatten(1).sum(1) + 0.3
    expected = (torch.sigmoid(z) - y.double()).view(-1, 1, 1, 1) * w
    torch.testing.assert_close(sal.loss_gradient(model, x, y), expected)
    with pytest.raises(ValueError, match=r"classes in \[0, 1\]"):
        sal.loss_gradient(model, x, torch.tensor([0, 1, 2, 0]))


def test_grad_x_input_of_a_linear_logit_is_w_times_x():
    model, x, w = linear()
    torch.testing.assert_close(sal.grad_x_input(model, x, 1), w * x)


def test_smoothgrad_with_zero_noise_is_the_gradient():
    model = cnn()
    x = torch.rand(3, 1, 6, 6, generator=gen(1))
    torch.testing.assert_close(sal.smoothgrad(model, x, sigma=0.0, samples=5), sal.gradient(model, x),
                               atol=1e-6, rtol=1e-5)


def test_smoothgrad_of_a_quadratic_is_the_gradient_at_the_mean():
    """For f = 0.5 * sum(a (x - c)^2) the gradient a (x - c) is linear in x: noise averages out."""
    c = torch.full((1, 4, 4), 0.5)
    model = Quadratic(c, a=2.0)
    x = torch.rand(2, 1, 4, 4, generator=gen(2))
    sg = sal.smoothgrad(model, x, 1, sigma=0.2, samples=4000, generator=gen(3))
    torch.testing.assert_close(sg, 2.0 * (x - c), atol=0.03, rtol=0)
    # Squared: E[(a (x + s z - c))^2] = a^2 ((x - c)^2 + s^2)
    sq = sal.smoothgrad(model, x, 1, sigma=0.2, samples=4000, squared=True, generator=gen(3))
    torch.testing.assert_close(sq, 4.0 * ((x - c) ** 2 + 0.04), atol=0.03, rtol=0)


def test_integrated_gradients_is_exact_for_a_linear_model():
    model, x, w = linear()
    for rule in sal.RULES:
        res = sal.integrated_gradients(model, x, 1, steps=3, rule=rule, return_delta=True)
        torch.testing.assert_close(res.attribution, w * x, atol=1e-6, rtol=1e-5)
        assert float(res.delta.abs().max()) < 1e-5
    base = torch.full((1, 5, 5), 0.2)
    torch.testing.assert_close(sal.integrated_gradients(model, x, 1, baseline=base, steps=2),
                               w * (x - base), atol=1e-6, rtol=1e-5)


def test_integrated_gradients_on_a_quadratic_by_hand():
    """f = 0.5 a (x - c)^2 per pixel, baseline b: IG = 0.5 a ((x-c)^2 - (b-c)^2) exactly, and the
    trapezoid rule is exact for the linear integrand."""
    c = torch.full((1, 3, 3), 0.4)
    model = Quadratic(c, a=3.0)
    x = torch.rand(2, 1, 3, 3, generator=gen(4))
    ig = sal.integrated_gradients(model, x, 1, baseline=0.0, steps=2, rule="trapezoid")
    torch.testing.assert_close(ig, 1.5 * ((x - c) ** 2 - c ** 2), atol=1e-6, rtol=1e-5)


def test_completeness_gap_shrinks_with_steps():
    model = cnn()
    x = torch.rand(4, 1, 6, 6, generator=gen(5))
    gaps = [float(sal.integrated_gradients(model, x, steps=s, rule="left", return_delta=True).delta.abs().max())
            for s in (4, 32, 256)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.02 * max(gaps[0], 1e-3) + 1e-3
    # The sum really tracks f(x) - f(baseline): a wrong scaling would leave a large gap.
    res = sal.integrated_gradients(model, x, steps=256, rule="trapezoid", return_delta=True)
    f = lambda z: model(z).gather(1, model(x).argmax(1, keepdim=True)).squeeze(1)
    torch.testing.assert_close(res.attribution.flatten(1).sum(1), (f(x) - f(torch.zeros_like(x))).detach(),
                               atol=2e-3, rtol=1e-3)


# --- captum -------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_agrees_with_captum():
    attr = require_peer("captum.attr")
    torch.manual_seed(0)
    model = cnn(num_classes=5, size=8)
    x = torch.rand(6, 1, 8, 8, generator=gen(6))
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(sal.gradient(model, x, target),
                               attr.Saliency(model).attribute(x, target=target, abs=False))
    torch.testing.assert_close(sal.grad_x_input(model, x, target),
                               attr.InputXGradient(model).attribute(x, target=target))
    theirs, delta = attr.IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=20, method="riemann_trapezoid",
        return_convergence_delta=True)
    ours = sal.integrated_gradients(model, x, target, steps=20, rule="trapezoid", return_delta=True)
    # captum's "riemann_trapezoid" evaluates the same 20 points but gives them weights 1/20 (1/40
    # at the ends), which sum to 19/20 instead of 1; the trapezoid rule's weights are 1/19 (1/38).
    # So captum's attributions are ours times 19/20, and its completeness gap is the larger one.
    torch.testing.assert_close(ours.attribution * 19 / 20, theirs, atol=1e-5, rtol=1e-4)
    assert bool((ours.delta.abs() < delta.abs()).all())
    for rule, method in [("left", "riemann_left"), ("right", "riemann_right"), ("middle", "riemann_middle")]:
        theirs = attr.IntegratedGradients(model).attribute(x, target=target, n_steps=16, method=method)
        torch.testing.assert_close(sal.integrated_gradients(model, x, target, steps=16, rule=rule), theirs,
                                   atol=1e-5, rtol=1e-4)


# --- invariants ---------------------------------------------------------------------------------

def test_default_target_is_the_prediction():
    model = cnn()
    x = torch.rand(5, 1, 6, 6, generator=gen(7))
    pred = model(x).argmax(1)
    torch.testing.assert_close(sal.gradient(model, x), sal.gradient(model, x, pred))
    torch.testing.assert_close(sal.integrated_gradients(model, x, steps=8),
                               sal.integrated_gradients(model, x, pred, steps=8))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_batch_invariance(batch_size):
    model = cnn()
    x = torch.rand(5, 1, 6, 6, generator=gen(8))
    ref_ig = sal.integrated_gradients(model, x, steps=12, batch_size=10_000)
    torch.testing.assert_close(sal.integrated_gradients(model, x, steps=12, batch_size=batch_size), ref_ig,
                               atol=1e-6, rtol=1e-5)
    ref_sg = sal.smoothgrad(model, x, samples=10, generator=gen(9))
    torch.testing.assert_close(sal.smoothgrad(model, x, samples=10, batch_size=batch_size, generator=gen(9)),
                               ref_sg, atol=1e-6, rtol=1e-5)
    # One example at a time with one generator gives the batch's noise.
    g = gen(9)
    one = torch.cat([sal.smoothgrad(model, x[i:i + 1], samples=10, batch_size=batch_size, generator=g)
                     for i in range(5)])
    torch.testing.assert_close(one, ref_sg, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.cat([sal.gradient(model, x[i:i + 1]) for i in range(5)]),
                               sal.gradient(model, x), atol=1e-6, rtol=1e-5)


def test_smoothgrad_is_deterministic_per_generator_and_random_across():
    model = cnn()
    x = torch.rand(2, 1, 6, 6, generator=gen(10))
    a = sal.smoothgrad(model, x, samples=8, generator=gen(11))
    assert torch.equal(a, sal.smoothgrad(model, x, samples=8, generator=gen(11)))
    assert not torch.equal(a, sal.smoothgrad(model, x, samples=8, generator=gen(12)))


@pytest.mark.parametrize("method", ["gradient", "grad_x_input", "smoothgrad", "integrated_gradients"])
def test_no_side_effects(method):
    model = tiny_cnn(num_classes=4, size=6, dropout=0.5).train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 1, 6, 6, generator=gen(13)).requires_grad_(True)
    x.grad = torch.full_like(x, 7.0)
    x_copy = x.detach().clone()
    kwargs = {"smoothgrad": dict(samples=4), "integrated_gradients": dict(steps=4)}.get(method, {})
    out = getattr(sal, method)(model, x, **kwargs)
    assert out.shape == x.shape and not out.requires_grad
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert torch.equal(x.detach(), x_copy) and torch.equal(x.grad, torch.full_like(x, 7.0))


def test_maps_use_eval_mode():
    """Dropout 0.5 in train mode would make the gradient random; eval mode makes it repeatable."""
    model = tiny_cnn(num_classes=4, size=6, dropout=0.5).train()
    x = torch.rand(3, 1, 6, 6, generator=gen(14))
    expected = sal.gradient(model.eval(), x)
    model.train()
    torch.testing.assert_close(sal.gradient(model, x), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_x(device):
    model = tiny_cnn(num_classes=3, size=4).eval().to(device).double()
    x = torch.rand(2, 1, 4, 4, device=device, dtype=torch.float64)
    for out in (sal.gradient(model, x), sal.smoothgrad(model, x, samples=3, generator=gen(15, device)),
                sal.integrated_gradients(model, x, steps=3)):
        assert out.device.type == device and out.dtype == torch.float64


# --- heatmaps -----------------------------------------------------------------------------------

def test_to_heatmap_reduces_channels_and_normalises_robustly():
    attr = torch.zeros(2, 3, 4, 4)
    attr[0, :, 0, 0] = torch.tensor([1.0, -3.0, 1.0])  # sum -1, abs_sum 5, max_abs 3
    attr[0, 0, 1:, :] = 0.5
    attr[1, 0] = torch.linspace(-1, 1, 16).view(4, 4)
    h = sal.to_heatmap(attr, reduce="abs_sum", percentile=100.0)
    assert h.shape == (2, 4, 4) and float(h[0, 0, 0]) == 1.0 and float(h[0, 1, 0]) == pytest.approx(0.1)
    assert float(sal.to_heatmap(attr, reduce="max_abs", percentile=100.0)[0, 1, 0]) == pytest.approx(0.5 / 3)
    signed = sal.to_heatmap(attr, absolute=False, percentile=100.0)
    assert float(signed[1].min()) == -1.0 and float(signed[1].max()) == 1.0
    # One outlier pixel does not wash out the rest at the 90th percentile.
    spiky = torch.ones(1, 1, 10, 10)
    spiky[0, 0, 0, 0] = 1000.0
    assert float(sal.to_heatmap(spiky, percentile=90.0)[0, 5, 5]) == 1.0


# --- bad input ----------------------------------------------------------------------------------

def test_attribute_dispatches_by_name():
    model = cnn()
    x = torch.rand(2, 1, 6, 6, generator=gen(16))
    torch.testing.assert_close(sal.attribute(model, x, method="grad_x_input"), sal.grad_x_input(model, x))
    torch.testing.assert_close(sal.attribute(model, x, 1, method="integrated_gradients", steps=5),
                               sal.integrated_gradients(model, x, 1, steps=5))


def test_bad_input_is_rejected():
    model = cnn()
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match=r"unknown method 'lime'; valid values are 'gradient'"):
        sal.attribute(model, x, method="lime")
    with pytest.raises(ValueError, match=r"steps must be >= 1"):
        sal.integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match=r"steps must be >= 2 for the trapezoid rule.*rule='middle'"):
        sal.integrated_gradients(model, x, steps=1)
    with pytest.raises(ValueError, match=r"unknown rule 'simpson'"):
        sal.integrated_gradients(model, x, rule="simpson")
    with pytest.raises(ValueError, match=r"baseline must have the shape of x \(2, 1, 6, 6\).*got \(1, 5, 5\)"):
        sal.integrated_gradients(model, x, baseline=torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match=r"target must hold classes in \[0, 3\].*max=4"):
        sal.gradient(model, x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"target must hold classes in \[0, 3\].*min=-1"):
        sal.smoothgrad(model, x, -1)
    with pytest.raises(ValueError, match=r"target must be an int64 tensor of shape \(2,\)"):
        sal.gradient(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"sigma must be >= 0"):
        sal.smoothgrad(model, x, sigma=-0.1)
    with pytest.raises(ValueError, match=r"samples must be >= 1"):
        sal.smoothgrad(model, x, samples=0)
    with pytest.raises(ValueError, match=r"\[0, 1\].*Normalize"):
        sal.gradient(model, x * 2)
    with pytest.raises(ValueError, match=r"unknown reduce 'mean'"):
        sal.to_heatmap(torch.zeros(1, 1, 2, 2), reduce="mean")
