"""Attacks: analytic models, invariants, side effects, bad input, agreement with torchattacks."""

import functools
import math
import warnings

import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab import attacks
from robustlab.testing import LinearBinary, Quadratic, assert_same_state, model_state, tiny_cnn

from .conftest import require_peer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def linear_setup(n=6, shape=(1, 4, 4), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=dtype)
    # Interior points, so that clamping to [0, 1] never interferes with eps <= 0.25.
    x = 0.3 + 0.4 * torch.rand((n, *shape), generator=g, dtype=dtype)
    return LinearBinary(w, b=0.1), x, w


# --- analytic models ---------------------------------------------------------------------------

@pytest.mark.parametrize("label,direction", [(1, -1.0), (0, 1.0)])
def test_fgsm_on_linear_model_is_eps_sign_w(label, direction):
    model, x, w = linear_setup()
    y = torch.full((x.shape[0],), label)
    x_adv = rl.fgsm(model, x, y, eps=0.1)
    torch.testing.assert_close(x_adv - x, direction * 0.1 * w.sign().expand_as(x), atol=1e-6, rtol=0)


def test_targeted_fgsm_moves_towards_the_target():
    model, x, w = linear_setup()
    x_adv = rl.fgsm(model, x, torch.zeros(x.shape[0], dtype=torch.long), eps=0.1, targeted=True)
    torch.testing.assert_close(x_adv - x, -0.1 * w.sign().expand_as(x), atol=1e-6, rtol=0)
    assert bool((model(x_adv)[:, 1] < model(x)[:, 1]).all())


def test_fgm_on_linear_model_is_along_w():
    model, x, w = linear_setup()
    y = torch.ones(x.shape[0], dtype=torch.long)
    x_adv = rl.fgm(model, x, y, eps=0.25)
    torch.testing.assert_close(x_adv - x, (-0.25 * w / w.norm()).expand_as(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_linf_reaches_the_worst_corner_of_a_linear_model(random_start):
    model, x, w = linear_setup()
    y = torch.ones(x.shape[0], dtype=torch.long)
    # 2*eps/alpha steps walk from any start in the box to the corner -eps*sign(w).
    x_adv = rl.pgd(model, x, y, eps=0.2, alpha=0.05, steps=9, random_start=random_start,
                   generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x_adv - x, -0.2 * w.sign().expand_as(x), atol=1e-6, rtol=0)


def test_pgd_l2_on_linear_model_ends_at_eps_along_w():
    model, x, w = linear_setup()
    y = torch.ones(x.shape[0], dtype=torch.long)
    x_adv = rl.pgd(model, x, y, eps=0.5, alpha=0.2, steps=4, norm="l2", random_start=False)
    torch.testing.assert_close(x_adv - x, (-0.5 * w / w.norm()).expand_as(x), atol=1e-6, rtol=0)


def test_pgd_linf_on_quadratic_moves_away_from_the_centre():
    g = torch.Generator().manual_seed(3)
    c = torch.rand(1, 5, 5, generator=g)
    x = torch.rand(4, 1, 5, 5, generator=g)
    model = Quadratic(c, a=2.0)
    y = torch.zeros(4, dtype=torch.long)  # the loss of class 0 grows with ||x - c||
    x_adv = rl.pgd(model, x, y, eps=0.1, alpha=0.03, steps=10, random_start=False)
    expected = (x + 0.1 * (x - c).sign()).clamp(0, 1)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


def test_cw_loss_is_the_logit_margin():
    logits = torch.tensor([[2.0, 5.0, -1.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([1, 0])
    torch.testing.assert_close(attacks.per_example_loss(logits, y, "cw"), torch.tensor([-3.0, 3.0]))
    ce = attacks.per_example_loss(logits, y, "ce")
    torch.testing.assert_close(ce, -torch.log_softmax(logits, 1)[[0, 1], [1, 0]])


def test_pgd_with_cw_loss_on_linear_model():
    model, x, w = linear_setup()
    y = torch.ones(x.shape[0], dtype=torch.long)
    x_adv = rl.pgd(model, x, y, eps=0.2, alpha=0.05, steps=5, loss="cw", random_start=False)
    torch.testing.assert_close(x_adv - x, -0.2 * w.sign().expand_as(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("targeted", [False, True])
def test_restarts_keep_the_best_iterate_per_example(targeted):
    g = torch.Generator().manual_seed(5)
    c = torch.rand(1, 3, 3, generator=g)
    x = torch.rand(8, 1, 3, 3, generator=g)
    model = Quadratic(c)
    y = torch.zeros(8, dtype=torch.long)
    seed = 11
    x_adv = rl.pgd(model, x, y, eps=0.3, alpha=0.1, steps=0, restarts=4, targeted=targeted,
                   generator=torch.Generator().manual_seed(seed))
    # With steps=0 each restart's iterate is its random start: rebuild them and pick by hand.
    starts = attacks.geometry("linf").random_start(x, 0.3, restarts=4, generator=torch.Generator().manual_seed(seed))
    candidates = torch.stack([(x + starts[:, r].view_as(x)).clamp(0, 1) for r in range(4)])
    losses = torch.stack([attacks.per_example_loss(model(c_), y) for c_ in candidates])  # (R, N)
    pick = losses.argmin(0) if targeted else losses.argmax(0)
    torch.testing.assert_close(x_adv, candidates[pick, torch.arange(8)])
    assert len(set(pick.tolist())) > 1  # the choice really is per example


def test_more_restarts_never_lower_the_loss(small_cnn, mnist_batch):
    x, y = mnist_batch
    one = rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.05, steps=3, restarts=1,
                 generator=torch.Generator().manual_seed(0))
    five = rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.05, steps=3, restarts=5,
                  generator=torch.Generator().manual_seed(0))
    # Example 0's first restart draws the same numbers in both runs (example-major layout).
    with torch.no_grad():
        l1 = attacks.per_example_loss(small_cnn(one[:1]), y[:1])
        l5 = attacks.per_example_loss(small_cnn(five[:1]), y[:1])
    assert float(l5) >= float(l1) - 1e-6


def test_l2_random_start_is_uniform_in_the_ball():
    x = torch.full((4000, 1, 2, 2), 0.5, dtype=torch.float64)
    starts = attacks.geometry("l2").random_start(x, 0.4, generator=torch.Generator().manual_seed(0))[:, 0].flatten(1)
    r = starts.norm(dim=1) / 0.4
    assert float(r.max()) <= 1.0
    # Uniform in a 4-D ball: P(r <= t) = t**4, so the median radius is 0.5**0.25.
    assert abs(float(r.median()) - 0.5 ** 0.25) < 0.02
    # Directions are isotropic: the mean unit vector is near 0.
    assert float((starts / starts.norm(dim=1, keepdim=True)).mean(0).abs().max()) < 0.05


def test_linf_random_start_is_uniform_in_the_box():
    x = torch.zeros(2000, 1, 2, 2)
    starts = attacks.geometry("linf").random_start(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert float(starts.abs().max()) <= 0.3
    assert abs(float(starts.mean())) < 0.01 and abs(float(starts.std()) - 0.3 / math.sqrt(3)) < 0.01


# --- invariants --------------------------------------------------------------------------------

ALL_ATTACKS = {
    "fgsm": lambda m, x, y, **kw: rl.fgsm(m, x, y, eps=0.3, **kw),
    "fgm": lambda m, x, y, **kw: rl.fgm(m, x, y, eps=2.0, **kw),
    "pgd-linf": lambda m, x, y, **kw: rl.pgd(m, x, y, eps=0.3, alpha=0.05, steps=5, **kw),
    "pgd-l2": lambda m, x, y, **kw: rl.pgd(m, x, y, eps=2.0, alpha=0.5, steps=5, norm="l2", **kw),
    "pgd-linf-cw-restarts": lambda m, x, y, **kw: rl.pgd(m, x, y, eps=0.3, alpha=0.05, steps=3,
                                                         restarts=3, loss="cw", **kw),
}
BUDGET = {"fgsm": ("linf", 0.3), "fgm": ("l2", 2.0), "pgd-linf": ("linf", 0.3),
          "pgd-l2": ("l2", 2.0), "pgd-linf-cw-restarts": ("linf", 0.3)}


@pytest.mark.parametrize("name", ALL_ATTACKS)
@pytest.mark.parametrize("targeted", [False, True])
def test_budget_and_range(name, targeted, small_cnn, mnist_batch):
    x, y = mnist_batch
    y = (y + 1) % 10 if targeted else y
    x_adv = ALL_ATTACKS[name](small_cnn, x, y, targeted=targeted)
    norm, eps = BUDGET[name]
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_attacks_raise_the_loss(name, small_cnn, mnist_batch):
    x, y = mnist_batch
    x_adv = ALL_ATTACKS[name](small_cnn, x, y)
    with torch.no_grad():
        before = attacks.per_example_loss(small_cnn(x), y).mean()
        after = attacks.per_example_loss(small_cnn(x_adv), y).mean()
    assert float(after) > float(before)


_snapshot, _assert_same = model_state, assert_same_state


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_no_side_effects(name):
    model = tiny_cnn(seed=1)
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model: flags must come back mixed
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)
    model[-1].bias.requires_grad_(False)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    x_copy = x.clone()
    before = _snapshot(model)
    x_adv = ALL_ATTACKS[name](model, x, y)
    _assert_same(before, _snapshot(model))
    assert torch.equal(x, x_copy) and x.grad is None and not x.requires_grad
    assert not x_adv.requires_grad and x_adv.grad_fn is None


def test_attack_runs_the_model_in_eval_mode():
    """Dropout and batch statistics in train mode would make the result random and different."""
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    in_train = tiny_cnn(seed=2).train()
    in_eval = tiny_cnn(seed=2).eval()
    a = rl.pgd(in_train, x, y, eps=0.2, alpha=0.05, steps=4, random_start=False)
    b = rl.pgd(in_eval, x, y, eps=0.2, alpha=0.05, steps=4, random_start=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batch_invariance_with_one_generator(norm):
    model = tiny_cnn(seed=3).double().eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 7, 9])
    kw = dict(eps=0.3 if norm == "linf" else 1.5, alpha=0.05 if norm == "linf" else 0.3,
              steps=4, norm=norm, restarts=2)
    batch = rl.pgd(model, x, y, generator=torch.Generator().manual_seed(7), **kw)
    g = torch.Generator().manual_seed(7)
    single = torch.cat([rl.pgd(model, x[i:i + 1], y[i:i + 1], generator=g, **kw) for i in range(5)])
    torch.testing.assert_close(batch, single, atol=1e-10, rtol=0)


def test_same_generator_state_gives_the_same_result(small_cnn, mnist_batch):
    x, y = mnist_batch
    run = lambda seed: rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.05, steps=3, restarts=2,
                              generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(4), run(4))
    assert not torch.equal(run(4), run(5))


def test_zero_eps_and_zero_steps_return_a_copy_of_x(small_cnn, mnist_batch):
    x, y = mnist_batch
    for x_adv in (rl.pgd(small_cnn, x, y, eps=0.0, alpha=0.1, steps=3),
                  rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.1, steps=0, random_start=False),
                  rl.fgsm(small_cnn, x, y, eps=0.0), rl.fgm(small_cnn, x, y, eps=0.0)):
        assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()


def test_empty_batch(small_cnn):
    x = torch.zeros(0, 1, 28, 28)
    y = torch.zeros(0, dtype=torch.long)
    assert rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.1, steps=3).shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_follow_x(device, dtype, mnist_batch):
    torch.manual_seed(0)
    model = rl.models.SmallCNN().to(device=device, dtype=dtype).eval()
    x, y = mnist_batch
    x, y = x.to(device, dtype), y.to(device)
    for name, attack in ALL_ATTACKS.items():
        if "pgd" in name:
            x_adv = attack(model, x, y, generator=torch.Generator(device=device).manual_seed(0))
        else:
            x_adv = attack(model, x, y)
        assert x_adv.device == x.device and x_adv.dtype == dtype, name


# --- bad input -----------------------------------------------------------------------------------

def _bad_calls(model, x, y):
    ok = dict(eps=0.3, alpha=0.1, steps=2)
    return {
        "x above 1": (lambda: rl.pgd(model, x * 2, y, **ok), ValueError, r"\[0, 1\].*Normalize"),
        "x below 0": (lambda: rl.fgsm(model, x - 0.5, y, eps=0.1), ValueError, r"min=-0\.5"),
        "x 3-D": (lambda: rl.pgd(model, x[0], y[:1], **ok), ValueError, r"4-D"),
        "x integer": (lambda: rl.pgd(model, (x * 255).to(torch.uint8), y, **ok), ValueError, "floating"),
        "x NaN": (lambda: rl.pgd(model, x.masked_fill(x > 0.9, float("nan")), y, **ok), ValueError, "NaN"),
        "x inf": (lambda: rl.fgm(model, x.masked_fill(x > 0.9, float("inf")), y, eps=1.0), ValueError, "infinite"),
        "x not a tensor": (lambda: rl.pgd(model, x.numpy(), y, **ok), TypeError, "torch.Tensor"),
        "y wrong shape": (lambda: rl.pgd(model, x, y[:-1], **ok), ValueError, r"y must have shape"),
        "y 2-D": (lambda: rl.pgd(model, x, y[:, None], **ok), ValueError, r"y must have shape"),
        "y float": (lambda: rl.pgd(model, x, y.float(), **ok), ValueError, r"int64.*y\.long\(\)"),
        "y negative": (lambda: rl.pgd(model, x, y - 1, **ok), ValueError, ">= 0"),
        "y too large": (lambda: rl.pgd(model, x, y + 10, **ok), ValueError, "10 classes"),
        "y too large fgsm": (lambda: rl.fgsm(model, x, y + 10, eps=0.1), ValueError, "10 classes"),
        "eps negative": (lambda: rl.pgd(model, x, y, eps=-0.1, alpha=0.1, steps=2), ValueError, "eps must be >= 0"),
        "eps negative fgsm": (lambda: rl.fgsm(model, x, y, eps=-0.1), ValueError, "eps must be >= 0"),
        "eps nan": (lambda: rl.fgm(model, x, y, eps=float("nan")), ValueError, "eps must be finite"),
        "alpha zero": (lambda: rl.pgd(model, x, y, eps=0.3, alpha=0.0, steps=2), ValueError, "alpha must be > 0"),
        "steps negative": (lambda: rl.pgd(model, x, y, eps=0.3, alpha=0.1, steps=-1), ValueError, "steps must be >= 0"),
        "steps float": (lambda: rl.pgd(model, x, y, eps=0.3, alpha=0.1, steps=2.5), TypeError, "steps must be an int"),
        "restarts zero": (lambda: rl.pgd(model, x, y, restarts=0, **ok), ValueError, "restarts must be >= 1"),
        "unknown norm": (lambda: rl.pgd(model, x, y, norm="l1", **ok), ValueError, "'linf', 'l2'"),
        "unknown loss": (lambda: rl.pgd(model, x, y, loss="hinge", **ok), ValueError, "'ce', 'cw'"),
        "targeted string": (lambda: rl.pgd(model, x, y, targeted="yes", **ok), TypeError,
                            "targeted must be True or False"),
        "random_start int": (lambda: rl.pgd(model, x, y, random_start=1, **ok), TypeError,
                             "random_start must be True or False"),
        "bad generator": (lambda: rl.pgd(model, x, y, generator=0, **ok), TypeError, "torch.Generator"),
        "output 1-D": (lambda: rl.pgd(nn.Sequential(model, nn.Flatten(0)), x, y, **ok), ValueError, r"\(N, K\)"),
        "output wrong N": (lambda: rl.fgsm(lambda t: model(t)[:1], x, y, eps=0.1), ValueError, r"\(N, K\)"),
        "output 4-D restarts": (lambda: rl.pgd(lambda t: model(t)[:, :, None, None], x, y, eps=0.3,
                                               alpha=0.1, steps=0, restarts=2), ValueError, r"\(N, K\)"),
    }


BAD = list(_bad_calls(None, torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long)))


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_a_clear_error_and_changes_nothing(case, small_cnn, mnist_batch):
    x, y = mnist_batch
    x_copy, before = x.clone(), _snapshot(small_cnn)
    call, error, match = _bad_calls(small_cnn, x, y)[case]
    with pytest.raises(error, match=match):
        call()
    assert torch.equal(x, x_copy)
    _assert_same(before, _snapshot(small_cnn))


def test_probability_outputs_get_a_warning(small_cnn, mnist_batch):
    x, y = mnist_batch
    softmaxed = nn.Sequential(small_cnn, nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="look like probabilities") as record:
        rl.pgd(softmaxed, x, y, eps=0.3, alpha=0.1, steps=2)
    assert record[0].filename == __file__  # it points at the caller's line
    with pytest.warns(UserWarning, match="look like probabilities") as record:
        rl.robust_accuracy(softmaxed, x, y, [])
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.1, steps=2)  # logits: no warning


# --- robust accuracy ---------------------------------------------------------------------------

def test_robust_accuracy_matches_the_linear_margin():
    """Against a linear model FGSM is the exact Linf worst case: an example survives iff it is
    correct and its margin |w.x + b| exceeds eps * ||w||_1."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 4, 4, generator=g)
    model = LinearBinary(w, b=0.05)
    x = 0.1 + 0.8 * torch.rand(300, 1, 4, 4, generator=g)  # interior: no clamping at eps=0.05
    f = x.flatten(1) @ w.flatten() + 0.05
    y = (torch.rand(300, generator=g) < 0.8).long() * (f > 0).long()  # mostly correct labels
    eps = 0.05
    correct = (f > 0).long() == y
    expected = correct & (f.abs() > eps * w.abs().sum())
    result = rl.robust_accuracy(model, x, y, {"fgsm": functools.partial(rl.fgsm, eps=eps)},
                                batch_size=64)
    assert torch.equal(result.robust, expected)
    assert result.accuracy == pytest.approx(float(expected.float().mean()))
    assert result.clean_accuracy == pytest.approx(float(correct.float().mean()))
    assert torch.equal(result.broken_by == 0, ~correct)
    assert torch.equal(result.broken_by == 1, correct & ~expected)
    assert result.names == ("fgsm",) and 0 < result.accuracy < result.clean_accuracy


def test_robust_accuracy_is_the_worst_case_over_attacks(small_cnn, mnist_batch):
    x, y = mnist_batch
    a1 = functools.partial(rl.fgsm, eps=0.15)
    a2 = functools.partial(rl.pgd, eps=0.15, alpha=0.02, steps=10, random_start=False)
    both = rl.robust_accuracy(small_cnn, x, y, [a1, a2])
    only1 = rl.robust_accuracy(small_cnn, x, y, [a1])
    only2 = rl.robust_accuracy(small_cnn, x, y, [a2])
    assert torch.equal(both.robust, only1.robust & only2.robust)
    assert both.names == ("fgsm(eps=0.15)", "pgd(eps=0.15, alpha=0.02, steps=10, random_start=False)")
    small = rl.robust_accuracy(small_cnn, x, y, [a1, a2], batch_size=5)
    assert torch.equal(small.robust, both.robust) and torch.equal(small.broken_by, both.broken_by)


def test_robust_accuracy_restores_the_mode_and_checks_attack_outputs(mnist_batch):
    x, y = mnist_batch
    torch.manual_seed(0)
    model = rl.models.SmallCNN().train()
    before = _snapshot(model)
    rl.robust_accuracy(model, x, y, [functools.partial(rl.fgsm, eps=0.1)])
    _assert_same(before, _snapshot(model))
    with pytest.raises(ValueError, match=r"x_adv returned by attack 'bad'.*\[0, 1\]"):
        rl.robust_accuracy(model, x, y, {"bad": lambda m, xb, yb: xb + 0.5})
    with pytest.raises(ValueError, match="must return x_adv of shape"):
        rl.robust_accuracy(model, x, y, {"bad": lambda m, xb, yb: xb[:1]})
    with pytest.raises(TypeError, match="list or dict"):
        rl.robust_accuracy(model, x, y, functools.partial(rl.fgsm, eps=0.1))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        rl.robust_accuracy(model, x, y, [], batch_size=0)


# --- agreement with an established implementation ----------------------------------------------

@pytest.fixture
def torchattacks():
    return require_peer("torchattacks")


def test_agrees_with_torchattacks_pgd_linf(torchattacks, small_cnn, mnist_batch):
    x, y = mnist_batch
    ref = torchattacks.PGD(small_cnn, eps=0.3, alpha=0.01, steps=20, random_start=False)(x, y)
    ours = rl.pgd(small_cnn, x, y, eps=0.3, alpha=0.01, steps=20, random_start=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert float((ours - x).abs().max()) > 0.19  # 20 steps of 0.01: a real attack, not a no-op on both sides


def test_agrees_with_torchattacks_targeted_pgd(torchattacks, small_cnn, mnist_batch):
    x, y = mnist_batch
    target = (y + 3) % 10
    attack = torchattacks.PGD(small_cnn, eps=0.2, alpha=0.02, steps=10, random_start=False)
    attack.set_mode_targeted_by_function(lambda images, labels: target)
    ref = attack(x, y)
    ours = rl.pgd(small_cnn, x, target, eps=0.2, alpha=0.02, steps=10, random_start=False,
                  targeted=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_agrees_with_torchattacks_pgd_l2(torchattacks, small_cnn, mnist_batch):
    x, y = mnist_batch
    ref = torchattacks.PGDL2(small_cnn, eps=2.0, alpha=0.25, steps=20, random_start=False)(x, y)
    ours = rl.pgd(small_cnn, x, y, eps=2.0, alpha=0.25, steps=20, norm="l2", random_start=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_agrees_with_torchattacks_fgsm_and_one_step_l2(torchattacks, small_cnn, mnist_batch):
    x, y = mnist_batch
    torch.testing.assert_close(rl.fgsm(small_cnn, x, y, eps=0.2),
                               torchattacks.FGSM(small_cnn, eps=0.2)(x, y), atol=1e-5, rtol=0)
    one_step = torchattacks.PGDL2(small_cnn, eps=1.5, alpha=1.5, steps=1, random_start=False)
    torch.testing.assert_close(rl.fgm(small_cnn, x, y, eps=1.5), one_step(x, y), atol=1e-5, rtol=0)
