"""APGD, Square and FMN, the shared geometry and pgd_step: analytic optima, masking, invariants,
bad input, and agreement with torchattacks' implementations."""

import sys

import pytest
import torch

import robustlab as rl
from robustlab import attacks
from robustlab.evaluate import accuracy
from robustlab.testing import LinearBinary, LinearMulti, QuantizedInput, tiny_cnn
from robustlab.testing import assert_same_state as _assert_same
from robustlab.testing import model_state as _snapshot


def _linear_multi(n=8, k=5, shape=(1, 6, 6), seed=0, dtype=torch.float64):
    """A K-class linear model (zero bias) and n interior points."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, *shape, generator=g, dtype=dtype)
    x = 0.4 + 0.2 * torch.rand(n, *shape, generator=g, dtype=dtype)
    return LinearMulti(weight, torch.zeros(k, dtype=dtype)), x


def _per_example_linear(seed, norm):
    """A two-class linear model, points near its boundary, their labels and their exact
    minimal distance to it, |w.x + b| / ||w||_dual."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 6, 6, generator=g, dtype=torch.float64)
    x = 0.45 + 0.1 * torch.rand(10, 1, 6, 6, generator=g, dtype=torch.float64)
    b = -float((x.flatten(1) @ w.flatten()).mean()) + 0.5
    model = LinearBinary(w, b=b)
    f = x.flatten(1) @ w.flatten() + b
    y = (f > 0).long()
    dual = w.abs().sum() if norm == "linf" else w.norm()
    return model, x, y, f.abs() / dual


# --- analytic optima ---------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fmn_finds_the_exact_minimal_norm_of_a_linear_model(norm):
    model, x, y, d_min = _per_example_linear(0, norm)
    # x lies in [0.45, 0.55], so a move of at most 0.4 per pixel never meets the box [0, 1]: the
    # analytic answer holds.
    assert float(d_min.max()) < 0.4
    res = rl.fmn(model, x, y, norm=norm, steps=200)
    assert torch.isfinite(res.norm).all()
    assert bool((model(res.x_adv).argmax(1) != y).all())  # every reported point really fools
    measured = attacks.geometry(norm).norm(res.x_adv - x)
    torch.testing.assert_close(measured, res.norm)
    # Never below the true minimum (no adversarial point is closer), and within 1 % of it.
    assert bool((res.norm >= d_min * (1 - 1e-6)).all())
    assert float((res.norm / d_min).max()) < 1.01


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_reaches_the_known_optimum_of_a_linear_model(norm):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, 5, 5, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(6, 1, 5, 5, generator=g, dtype=torch.float64)
    eps = 0.2 if norm == "linf" else 0.5
    # A bias that keeps every point of the ball in class 1 (but leaves the cross-entropy far from
    # its float64 floor): APGD must return the point of maximal loss, x - eps * sign(w) (Linf) or
    # x - eps * w / ||w|| (L2).
    model = LinearBinary(w, b=12.0)
    y = torch.ones(6, dtype=torch.long)
    dual = w.abs().sum() if norm == "linf" else w.norm()
    assert bool((model(x)[:, 1] - eps * dual > 2).all())
    x_adv = rl.apgd(model, x, y, eps=eps, norm=norm, steps=50, generator=torch.Generator().manual_seed(0))
    best = x - eps * (w.sign() if norm == "linf" else w / w.norm())
    with torch.no_grad():
        f_got = model(x_adv)[:, 1]
        f_best = model(best)[:, 1]
    torch.testing.assert_close(f_got, f_best, atol=1e-6 * float(w.abs().sum()), rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_towards_a_given_target_optimises_the_whole_budget(norm):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1, 5, 5, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(6, 1, 5, 5, generator=g, dtype=torch.float64)
    eps = 0.2 if norm == "linf" else 0.5
    # Every point is already in the target class 1: the untargeted attack on true label 0 would
    # stop at x, but an optimiser towards class 1 must still climb to the most confident point of
    # the ball, x + eps * sign(w) (Linf) or x + eps * w / ||w|| (L2).
    model = LinearBinary(w, b=1.0 - float((x.flatten(1) @ w.flatten()).min()))
    y, target = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    assert bool((model(x).argmax(1) == 1).all())
    best = x + eps * (w.sign() if norm == "linf" else w / w.norm())
    for random_start in (False, True):
        x_gen = rl.apgd(model, x, y, eps=eps, norm=norm, steps=60, target=target, random_start=random_start,
                        restarts=2 if random_start else 1, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(model(x_gen)[:, 1], model(best)[:, 1], atol=1e-6 * float(w.abs().sum()),
                                       rtol=0)
    # Without a random start the attack is deterministic whatever the generator.
    a = rl.apgd(model, x, y, eps=eps, norm=norm, steps=5, target=target, random_start=False,
                generator=torch.Generator().manual_seed(1))
    b = rl.apgd(model, x, y, eps=eps, norm=norm, steps=5, target=target, random_start=False,
                generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_apgd_t_targets_the_classes_in_the_models_order(monkeypatch):
    model, x = _linear_multi(n=6, k=6)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([50.0, 4.0, 3.0, 2.0, 1.0, 0.0], dtype=torch.float64))
    y = torch.zeros(6, dtype=torch.long)  # class 0 wins by far; 1 is the runner-up, 2 next
    apgd_module = sys.modules["robustlab.attacks.apgd"]  # the attribute robustlab.attacks.apgd is the function

    seen, original = [], apgd_module.targeted_dlr_loss
    monkeypatch.setattr(apgd_module, "targeted_dlr_loss",
                        lambda logits, yy, t: (seen.append(t.clone()), original(logits, yy, t))[1])
    rl.apgd(model, x, y, eps=0.01, steps=2, loss="dlr", targeted=True, n_target_classes=3,
            generator=torch.Generator().manual_seed(0))
    assert sorted({int(v) for t in seen for v in t}) == [1, 2, 3]  # never the true class, never 4 or 5


def test_apgd_checkpoints_follow_croce_and_hein():
    # p = 0, 0.22, 0.41, 0.57, 0.7, 0.8, 0.87, 0.93, 0.99 (each gap shrinks by 0.03, to >= 0.06).
    assert attacks.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_is_invariant_to_scaling_the_logits():
    logits = torch.randn(7, 10, generator=torch.Generator().manual_seed(0))
    y = torch.arange(7)
    torch.testing.assert_close(attacks.dlr_loss(5.0 * logits + 3.0, y), attacks.dlr_loss(logits, y))
    t = (y + 1) % 10
    torch.testing.assert_close(attacks.targeted_dlr_loss(5.0 * logits, y, t), attacks.targeted_dlr_loss(logits, y, t))


# --- masking ---------------------------------------------------------------------------------

def test_masked_gradient_stops_apgd_but_not_square(embedded):
    base = rl.zoo.load("mnist-standard")
    model = QuantizedInput(base, levels=4)
    idx = torch.arange(0, 5000, 250)
    x, y = embedded.x[idx], embedded.y[idx]
    clean = accuracy(model, x, y)
    assert clean > 0.9
    g = torch.Generator().manual_seed(0)
    # The gradient through the rounding is exactly zero: APGD can only use its random start.
    x_apgd = rl.apgd(model, x, y, eps=0.3, steps=20, generator=g)
    x_square = rl.square(model, x, y, eps=0.3, queries=300, generator=g)
    # On the unquantised model the same APGD breaks everything: the "robustness" is masking.
    assert accuracy(base, rl.apgd(base, x, y, eps=0.3, steps=20, generator=g), y) == 0.0
    assert accuracy(model, x_apgd, y) >= 0.5
    assert accuracy(model, x_square, y) <= 0.1
    with pytest.warns(rl.masking.MaskingWarning, match="exactly zero"):
        rl.masking.check_zero_gradients(model, x, y)


# --- invariants --------------------------------------------------------------------------------

NEW_ATTACKS = {
    "apgd-ce-linf": lambda m, x, y, **kw: rl.apgd(m, x, y, eps=0.3, steps=5, **kw),
    "apgd-dlr-l2": lambda m, x, y, **kw: rl.apgd(m, x, y, eps=1.0, norm="l2", steps=5, loss="dlr", **kw),
    "apgd-t-linf": lambda m, x, y, **kw: rl.apgd(m, x, y, eps=0.3, steps=4, loss="dlr", targeted=True,
                                                 n_target_classes=2, restarts=2, **kw),
    "square-linf": lambda m, x, y, **kw: rl.square(m, x, y, eps=0.3, queries=20, **kw),
    "square-l2": lambda m, x, y, **kw: rl.square(m, x, y, eps=1.0, norm="l2", queries=20, **kw),
    "fmn-l2": lambda m, x, y, **kw: rl.fmn(m, x, y, norm="l2", steps=10, **kw).x_adv,
    "fmn-linf": lambda m, x, y, **kw: rl.fmn(m, x, y, norm="linf", steps=10, **kw).x_adv,
}
BUDGET = {"apgd-ce-linf": ("linf", 0.3), "apgd-dlr-l2": ("l2", 1.0), "apgd-t-linf": ("linf", 0.3),
          "square-linf": ("linf", 0.3), "square-l2": ("l2", 1.0)}


@pytest.mark.parametrize("name", BUDGET)
def test_budget_and_range(name, small_cnn, mnist_batch):
    x, y = mnist_batch
    x_adv = NEW_ATTACKS[name](small_cnn, x, y, generator=torch.Generator().manual_seed(0))
    norm, eps = BUDGET[name]
    size = attacks.geometry(norm).norm(x_adv - x)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_no_side_effects(name):
    model = tiny_cnn(seed=1)
    model.train()
    model[1].eval()
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)
    model[-1].bias.requires_grad_(False)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    x_copy = x.clone()
    before = _snapshot(model)
    x_adv = NEW_ATTACKS[name](model, x, y, generator=torch.Generator().manual_seed(0))
    _assert_same(before, _snapshot(model))
    assert torch.equal(x, x_copy) and x.grad is None and not x.requires_grad
    assert not x_adv.requires_grad and x_adv.grad_fn is None


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_same_generator_state_gives_the_same_result(name, small_cnn, mnist_batch):
    x, y = mnist_batch
    run = lambda: NEW_ATTACKS[name](small_cnn, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(run(), run())


@pytest.mark.parametrize("name", ["apgd-ce-linf", "apgd-dlr-l2", "apgd-t-linf", "fmn-l2", "fmn-linf"])
def test_batch_invariance(name):
    model = tiny_cnn(seed=3).double().eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 7, 9])
    batch = NEW_ATTACKS[name](model, x, y, generator=torch.Generator().manual_seed(7))
    # APGD draws all its random starts up front, example-major, so one example at a time with one
    # generator sees the same numbers; FMN draws nothing.
    g = torch.Generator().manual_seed(7)
    single = torch.cat([NEW_ATTACKS[name](model, x[i:i + 1], y[i:i + 1], generator=g) for i in range(5)])
    torch.testing.assert_close(batch, single, atol=1e-10, rtol=0)


def test_empty_batch_and_zero_eps(small_cnn, mnist_batch):
    x, y = mnist_batch
    empty_x, empty_y = x[:0], y[:0]
    assert rl.apgd(small_cnn, empty_x, empty_y, eps=0.3).shape == empty_x.shape
    assert rl.square(small_cnn, empty_x, empty_y, eps=0.3).shape == empty_x.shape
    assert rl.fmn(small_cnn, empty_x, empty_y).x_adv.shape == empty_x.shape
    assert torch.equal(rl.square(small_cnn, x, y, eps=0.0), x)
    assert torch.equal(rl.apgd(small_cnn, x, y, eps=0.0, steps=3), x)


def test_fmn_reports_zero_for_misclassified_and_inf_when_nothing_found():
    model = LinearBinary(torch.ones(1, 2, 2), b=0.0)
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.tensor([0, 1])  # logit f = 2 > 0: class 1; example 0 is already wrong
    res = rl.fmn(model, x, y, steps=5)
    assert float(res.norm[0]) == 0.0 and torch.equal(res.x_adv[0], x[0])
    # A model that cannot be fooled inside [0, 1]: class 1 wins everywhere.
    sure = LinearBinary(torch.ones(1, 2, 2), b=100.0)
    res = rl.fmn(sure, x, torch.tensor([1, 1]), steps=5)
    assert bool(torch.isinf(res.norm).all()) and torch.equal(res.x_adv, x)


# --- the geometry and pgd_step -----------------------------------------------------------------

def test_pgd_step_is_project_of_step_for_both_norms():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 5, 5, generator=g)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    grad = torch.randn(x.shape, generator=g)
    grad[1] = 0.0
    got = rl.pgd_step(x_adv, x, grad, alpha=0.1, eps=0.2, norm="linf")
    want = torch.minimum(torch.maximum(x_adv + 0.1 * grad.sign(), x - 0.2), x + 0.2).clamp(0, 1)
    torch.testing.assert_close(got, want)
    got = rl.pgd_step(x_adv, x, grad, alpha=0.5, eps=0.4, norm="l2")
    moved = x_adv + 0.5 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    delta = moved - x
    scale = (0.4 / delta.flatten(1).norm(dim=1)).clamp(max=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(got, (x + delta * scale).clamp(0, 1))
    assert torch.equal(got[1], rl.pgd_step(x_adv, x, grad, alpha=0.5, eps=0.4, norm="l2")[1])


def test_pgd_alpha_none_is_madrys_rule(small_cnn, mnist_batch):
    x, y = mnist_batch
    a = rl.pgd(small_cnn, x, y, eps=0.3, steps=7, generator=torch.Generator().manual_seed(0))
    b = rl.pgd(small_cnn, x, y, eps=0.3, alpha=2.5 * 0.3 / 7, steps=7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_square_window_schedule():
    assert attacks.square_window_fraction(0.8, 0, 10_000) == 0.8
    assert attacks.square_window_fraction(0.8, 11, 10_000) == 0.4
    assert attacks.square_window_fraction(0.8, 8001, 10_000) == 0.8 / 512
    assert attacks.square_window_fraction(0.8, 2, 1000) == 0.4  # rescaled: query 2 of 1,000 is 20 of 10,000


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,match", [
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, norm="l1"), ValueError, "unknown norm 'l1'"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, loss="hinge"), ValueError, "unknown loss 'hinge'"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=-0.1), ValueError, "eps must be >= 0"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, steps=0), ValueError, "steps must be >= 1"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, targeted=True, n_target_classes=10), ValueError,
     "n_target_classes must be <= K - 1 = 9"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, targeted=True, n_target_classes=0), ValueError,
     "n_target_classes must be >= 1"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, targeted=True, target=(y + 1) % 10), ValueError,
     "pass one of them, not both"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, loss="dlr", target=y), ValueError, "needs target != y"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, target=y + 10), ValueError, "target classes must be < the model's 10"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, target=y[:1]), ValueError, "target must have shape"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, random_start=1), TypeError, "random_start"),
    (lambda m, x, y: rl.apgd(m, x, y, eps=0.3, random_start=False, restarts=2), ValueError,
     "would repeat one deterministic run"),
    (lambda m, x, y: rl.square(m, x, y, eps=0.3, queries=0), ValueError, "queries must be >= 1"),
    (lambda m, x, y: rl.square(m, x, y, eps=0.3, norm="l0"), ValueError, "unknown norm 'l0'"),
    (lambda m, x, y: rl.square(m, x, y, eps=-1.0), ValueError, "eps must be >= 0"),
    (lambda m, x, y: rl.fmn(m, x, y, norm="l1"), ValueError, "unknown norm 'l1'"),
    (lambda m, x, y: rl.fmn(m, x, y, steps=0), ValueError, "steps must be >= 1"),
    (lambda m, x, y: rl.pgd_step(x, x, x, alpha=0.1, eps=0.1, norm="l3"), ValueError, "unknown norm 'l3'"),
])
def test_bad_input_is_refused(call, error, match, small_cnn, mnist_batch):
    x, y = mnist_batch
    with pytest.raises(error, match=match):
        call(small_cnn, x, y)


def test_dlr_needs_enough_classes():
    model = LinearBinary(torch.ones(1, 2, 2))
    x, y = torch.full((2, 1, 2, 2), 0.5), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="at least 3 classes"):
        rl.apgd(model, x, y, eps=0.1, loss="dlr")
    three, x3 = _linear_multi(n=2, k=3)
    with pytest.raises(ValueError, match="at least 4 classes"):
        rl.apgd(three, x3, torch.tensor([0, 1]), eps=0.1, loss="dlr", target=torch.tensor([1, 2]))


def test_apgd_towards_a_target_with_the_dlr_loss_raises_the_target_logit():
    model, x = _linear_multi(n=6, k=5)
    y = model(x).argmax(1).detach()
    target = (y + 1) % 5
    x_gen = rl.apgd(model, x, y, eps=0.3, steps=30, loss="dlr", target=target, random_start=False)
    with torch.no_grad():
        before = (model(x).gather(1, target[:, None]) - model(x).gather(1, y[:, None])).squeeze(1)
        after = (model(x_gen).gather(1, target[:, None]) - model(x_gen).gather(1, y[:, None])).squeeze(1)
    assert bool((after > before + 0.1).all())
