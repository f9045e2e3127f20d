"""robustlab.evaluate and robustlab.masking: accuracy, robust_accuracy's checks, the attack suite
(masking warnings, worst case, determinism, resume), and agreement with torchattacks."""

import functools
import warnings

import pytest
import torch

import robustlab as rl
from robustlab import evaluate, masking
from robustlab.testing import LinearBinary, QuantizedInput

from .conftest import require_peer


@pytest.fixture(scope="module")
def standard():
    return rl.zoo.load("mnist-standard")


@pytest.fixture(scope="module")
def digits(embedded):
    idx = torch.arange(0, 5000, 125)  # 40 digits, 4 of each class
    return embedded.x[idx], embedded.y[idx]


def test_accuracy_counts_by_hand_and_takes_any_callable():
    model = LinearBinary(torch.ones(1, 2, 2), b=-2.0)  # class 1 iff the pixel sum > 2
    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 0.4, 0.6, 0.9)])
    y = torch.tensor([0, 1, 1, 0])
    assert evaluate.accuracy(model, x, y) == 0.5  # right on examples 0 and 2
    assert evaluate.accuracy(lambda z: model(z), x, y, batch_size=1) == 0.5
    model.train()
    evaluate.accuracy(model, x, y)
    assert model.training  # mode restored


def test_transfer_matrix_is_importable_from_its_old_home():
    from robustlab import interpret

    assert interpret.transfer_matrix is evaluate.transfer_matrix
    assert rl.attacks.robust_accuracy is evaluate.robust_accuracy


def test_suite_on_a_masked_model_warns_and_square_breaks_it(standard, digits):
    x, y = digits
    model = QuantizedInput(standard, levels=4)
    with pytest.warns(masking.MaskingWarning) as record:
        res = evaluate.attack_suite(model, x, y, norm="linf", eps=0.3, version="quick", seed=0)
    text = " ".join(str(w.message) for w in record)
    assert "exactly zero" in text  # the zero-gradient check
    assert "Square attack broke" in text  # gradient-free beats gradient
    assert "still classified correctly" in text  # eps = 1 does not bring accuracy to zero
    assert res.counts().get("square", 0) >= 0.5 * int(res.clean.sum())
    assert res.accuracy <= 0.1
    # The reported adversarial examples really fool the model and respect the budget.
    broken = torch.tensor([b not in (None, "clean") for b in res.broken_by])
    with torch.no_grad():
        assert bool((model(res.x_adv[broken]).argmax(1) != y[broken]).all())
    assert float((res.x_adv - x).abs().max()) <= 0.3 + 1e-6


def test_suite_result_is_a_per_example_worst_case(standard, digits):
    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", masking.MaskingWarning)
        res = evaluate.attack_suite(standard, x, y, norm="l2", eps=1.0, version="quick", seed=1)
    with torch.no_grad():
        clean_pred = standard(x).argmax(1)
        adv_pred = standard(res.x_adv).argmax(1)
    assert torch.equal(res.clean, clean_pred == y)
    for i, b in enumerate(res.broken_by):
        if b is None:
            assert bool(res.robust[i]) and bool(adv_pred[i] == y[i])
        elif b == "clean":
            assert not bool(res.clean[i])
        else:
            assert bool(adv_pred[i] != y[i]) and not bool(res.robust[i])
    assert res.accuracy == pytest.approx(float(res.robust.float().mean()))
    norms = (res.x_adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 1.0 + 1e-5
    # The suite is at least as strong as its first attack alone.
    alone = rl.apgd(standard, x, y, eps=1.0, norm="l2", steps=20, generator=torch.Generator().manual_seed(1))
    assert res.accuracy <= evaluate.accuracy(standard, alone, y)


def test_suite_is_deterministic_and_resumes_after_a_kill(standard, digits, tmp_path, monkeypatch):
    x, y = digits
    kw = dict(norm="linf", eps=0.1, version="quick", seed=3, batch_size=16, checks=False)
    first = evaluate.attack_suite(standard, x, y, **kw)
    again = evaluate.attack_suite(standard, x, y, **kw)
    assert first.broken_by == again.broken_by and torch.equal(first.x_adv, again.x_adv)
    # Kill the run after its second batch: the checkpoint holds 32 examples; a new run resumes.
    ckpt = tmp_path / "suite.ckpt"
    calls = {"n": 0}
    real_save = evaluate.suite._save_checkpoint

    def dying_save(path, state):
        real_save(path, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate.suite, "_save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        evaluate.attack_suite(standard, x, y, checkpoint=ckpt, **kw)
    monkeypatch.setattr(evaluate.suite, "_save_checkpoint", real_save)
    assert torch.load(ckpt, weights_only=True)["done"] == 32
    resumed = evaluate.attack_suite(standard, x, y, checkpoint=ckpt, **kw)
    assert resumed.broken_by == first.broken_by and torch.equal(resumed.x_adv, first.x_adv)
    with pytest.raises(ValueError, match="settings"):
        evaluate.attack_suite(standard, x, y, checkpoint=ckpt, **dict(kw, eps=0.2))
    # Another model or other digits with the same settings must not resume from this file.
    other = rl.zoo.load("mnist-standard")
    with torch.no_grad():
        other[-1].bias.add_(0.01)
    with pytest.raises(ValueError, match="settings"):
        evaluate.attack_suite(other, x, y, checkpoint=ckpt, **kw)
    with pytest.raises(ValueError, match="settings"):
        evaluate.attack_suite(standard, x.flip(0), y.flip(0), checkpoint=ckpt, **kw)


def test_state_digest_tells_weights_and_data_apart(standard, digits):
    x, y = digits
    d = evaluate.state_digest(standard, x, y)
    assert d == evaluate.state_digest(rl.zoo.load("mnist-standard"), x.clone(), y.clone())
    other = rl.zoo.load("mnist-standard")
    with torch.no_grad():
        other[1].weight[0, 0, 0, 0] += 1e-6
    assert evaluate.state_digest(other, x, y) != d
    assert evaluate.state_digest(standard, x[:-1], y[:-1]) != d
    assert evaluate.state_digest(standard, x, y.roll(1)) != d
    assert evaluate.state_digest(standard, x.double(), y) != d


def test_robust_accuracy_runs_the_masking_checks(standard, digits):
    x, y = digits
    model = QuantizedInput(standard, levels=4)
    attacks = [functools.partial(rl.fgsm, eps=0.3),
               functools.partial(rl.pgd, eps=0.3, steps=10, generator=torch.Generator().manual_seed(0))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", masking.MaskingWarning)
        rl.robust_accuracy(model, x, y, attacks)
    assert any("exactly zero" in str(w.message) for w in caught)
    # A single step that beats the multi-step attack after it: here a stand-in that moves nothing.
    # Every example FGSM broke is re-attacked by it, it breaks none, and the check counts them.
    def weak(model_, x_, y_):
        return x_.clone()

    with pytest.warns(masking.MaskingWarning) as record:
        res = rl.robust_accuracy(standard, x, y, {"fgsm": functools.partial(rl.fgsm, eps=0.3), "weak": weak},
                                 checks=True)
    n_fgsm = int((res.broken_by == 1).sum())
    assert n_fgsm > 0
    assert any(f"broke {n_fgsm} of {len(y)} examples that weak could not" in str(w.message) for w in record)


def test_check_randomness_sees_dropout_left_on():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    x = torch.rand(8, 1, 2, 2)

    class AlwaysRandom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z):
            return torch.nn.functional.dropout(self.net(z), 0.5, training=True)

    with pytest.warns(masking.MaskingWarning, match="changed between two identical calls"):
        assert masking.check_randomness(AlwaysRandom(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", masking.MaskingWarning)
        assert not masking.check_randomness(net, x)  # eval mode turns dropout off: no warning


def test_probabilities_are_flagged(standard, digits):
    x, y = digits
    probs = torch.nn.Sequential(standard, torch.nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="look like probabilities"):
        evaluate.attack_suite(probs, x[:8], y[:8], norm="linf", eps=0.1, version="quick", checks=False)


@pytest.mark.parametrize("kw,match", [
    (dict(norm="l1", eps=0.3), "unknown norm 'l1'"),
    (dict(norm="linf", eps=-0.3), "eps must be >= 0"),
    (dict(norm="linf", eps=0.3, version="plus"), "unknown version 'plus'"),
    (dict(norm="linf", eps=0.3, batch_size=0), "batch_size must be >= 1"),
])
def test_suite_bad_input(kw, match, standard, digits):
    x, y = digits
    with pytest.raises(ValueError, match=match):
        evaluate.attack_suite(standard, x, y, **kw)


def test_describe_names_every_setting():
    text = evaluate.describe_suite("standard")
    assert "APGD-CE (100 steps)" in text and "9 targets" in text and "5,000 queries" in text


# --- agreement with an established implementation --------------------------------------------

def test_suite_is_never_weaker_than_torchattacks_components(digits):
    """The same protocol with torchattacks' APGD, APGD-T and Square (original settings but 500
    queries, to keep the test short): our robust accuracy may be lower, never higher beyond a
    tolerance of 2 of the 40 digits (the attacks are random)."""
    ta = require_peer("torchattacks")
    model = rl.zoo.load("mnist-pgd-linf-0.3")
    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = evaluate.attack_suite(model, x, y, norm="linf", eps=0.3, seed=0, checks=False)
    left = (model(x).argmax(1) == y)
    for attack in (ta.APGD(model, norm="Linf", eps=0.3, steps=100, n_restarts=1, loss="ce", seed=0),
                   ta.APGDT(model, norm="Linf", eps=0.3, steps=100, n_restarts=1, n_classes=10, seed=0),
                   ta.Square(model, norm="Linf", eps=0.3, n_queries=500, n_restarts=1, seed=0)):
        idx = left.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x_adv = attack(x[idx], y[idx])
        with torch.no_grad():
            left[idx[model(x_adv).argmax(1) != y[idx]]] = False
    theirs = float(left.float().mean())
    assert ours.accuracy <= theirs + 2 / len(y)
    assert 0.5 < ours.accuracy < 1.0  # a robust model, and a suite that breaks some digits


def test_unbounded_eps_covers_the_whole_cube():
    mnist, cifar = torch.zeros(1, 1, 28, 28), torch.zeros(1, 3, 32, 32)
    assert masking.unbounded_eps("linf", mnist) == 1.0
    assert masking.unbounded_eps("l2", mnist) == 28.0  # the diagonal of [0, 1]^784
    assert masking.unbounded_eps("l2", cifar) == pytest.approx(3072 ** 0.5)
    # Any two images of the cube are within it: the all-black and the all-white image.
    assert float((torch.ones_like(cifar) - cifar).flatten().norm()) <= masking.unbounded_eps("l2", cifar) + 1e-9


def test_proportion_interval_is_clopper_pearson_and_covers():
    from robustlab.stats import proportion_interval
    # Edges have closed forms: 0 of n -> upper 1 - (alpha/2)^(1/n); n of n -> lower (alpha/2)^(1/n).
    low, high = proportion_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9)
    low, high = proportion_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 20), rel=1e-9)
    # Coverage by simulation: at p = 0.88, n = 200 an exact interval misses at most 5 % of the time.
    gen = torch.Generator().manual_seed(0)
    draws = (torch.rand(2000, 200, generator=gen) < 0.88).sum(1).tolist()
    misses = sum(not (lo <= 0.88 <= hi) for lo, hi in (proportion_interval(k, 200) for k in draws))
    assert misses / 2000 <= 0.05
    # Wider at a higher level, narrower with more examples.
    assert proportion_interval(88, 100, level=0.99)[0] < proportion_interval(88, 100)[0]
    assert proportion_interval(880, 1000)[1] - proportion_interval(880, 1000)[0] < \
        proportion_interval(88, 100)[1] - proportion_interval(88, 100)[0]


@pytest.mark.parametrize("kwargs, match", [(dict(successes=5, n=0), "n"), (dict(successes=11, n=10), "successes"),
                                           (dict(successes=-1, n=10), "successes"),
                                           (dict(successes=5, n=10, level=1.0), "level"),
                                           (dict(successes=5, n=10, level=0.0), "level")])
def test_proportion_interval_rejects_bad_input(kwargs, match):
    from robustlab.stats import proportion_interval
    with pytest.raises(ValueError, match=match):
        proportion_interval(**kwargs)


def test_suite_result_interval_matches_its_counts(standard, digits):
    x, y = digits
    result = evaluate.attack_suite(standard, x[:10], y[:10], norm="linf", eps=0.1, version="quick", checks=False)
    from robustlab.stats import proportion_interval
    assert result.interval() == proportion_interval(int(result.robust.sum()), 10)
    low, high = result.interval()
    assert low <= result.accuracy <= high


def test_paired_test_is_mcnemars_exact_test():
    from scipy.stats import binomtest

    from robustlab.stats import paired_test
    a = torch.tensor([True] * 90 + [False] * 10)
    assert paired_test(a, a) == 1.0  # never disagree: no evidence of a difference
    # 8 examples only A gets right, 1 only B: p = P(Binomial(9, 1/2) in the tails of 8).
    b = a.clone()
    b[:8] = False
    b[90] = True
    assert paired_test(a, b) == pytest.approx(binomtest(8, 9, 0.5).pvalue)
    assert paired_test(a, b) == paired_test(b, a)
    assert paired_test(a, b) < 0.05
    # One disagreement each way: no evidence either way.
    c = a.clone()
    c[0], c[95] = False, True
    assert paired_test(a, c) == 1.0
    with pytest.raises(ValueError, match="same examples"):
        paired_test(a, b[:-1])
