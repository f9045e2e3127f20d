"""robustlab.grading: correct code passes (also written differently from the solutions), the
mistakes students make fail with feedback they can act on, and handing in the reference fails."""

import re
import warnings

import pytest

from robustlab import grading

from .exercise_variants import ALTERNATIVE, DELEGATING, PRELUDE, WRONG


def namespace(overrides: str = "") -> dict:
    """A notebook-like namespace with every correct implementation, then ``overrides``."""
    ns: dict = {}
    exec(PRELUDE, ns)
    for code in ALTERNATIVE.values():
        exec(code, ns)
    exec(overrides, ns)
    return ns


def test_every_item_has_a_correct_alternative():
    assert set(ALTERNATIVE) == set(grading.ITEMS)


@pytest.mark.parametrize("item", sorted(grading.ITEMS))
def test_correct_code_passes_visible_and_hidden_checks(item, capsys):
    ns = namespace()
    assert grading.check(item, ns[item]) is None  # no value: nbgrader would read a number as partial credit
    grading.check(item, ns[item], hidden=True)
    # Other lines may be notes about warnings raised on the way (shown on stdout, never scored).
    lines = [line for line in capsys.readouterr().out.splitlines() if "case(s) passed" in line]
    visible, hidden = lines
    n_visible = int(re.match(rf"{item}: (\d+) visible case\(s\) passed$", visible).group(1))
    n_hidden = int(re.match(rf"{item}: (\d+) hidden case\(s\) passed$", hidden).group(1))
    assert n_hidden > n_visible >= 1


@pytest.mark.parametrize("item,what,code,fragment", WRONG, ids=[f"{w[0]}: {w[1]}" for w in WRONG])
def test_typical_mistakes_fail_with_actionable_feedback(item, what, code, fragment):
    ns = namespace(code)
    with pytest.raises(grading.Feedback) as info:
        grading.check(item, ns[item], hidden=True, quiet=True)
    message = str(info.value)
    assert message.startswith(f"{item}: ") and fragment in message, message


def test_every_assignment_item_has_a_typical_mistake():
    assert {item for item, *_ in WRONG} == set(grading.ITEMS)


@pytest.mark.parametrize("what,item,code", DELEGATING, ids=[d[0] for d in DELEGATING])
def test_handing_in_the_reference_scores_zero(what, item, code):
    ns = namespace(code)
    with pytest.raises(grading.Feedback, match="scores 0"):
        grading.check(item, ns[item], quiet=True)


def test_an_infinite_loop_fails_only_its_item(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_GRADING_TIME_LIMIT", "1")
    ns = namespace('''
def lower_confidence_bound(k, n, alpha):
    while True:
        pass
''')
    with pytest.raises(grading.Feedback, match="did not return within its budget of 1 s of CPU time"):
        grading.check("lower_confidence_bound", ns["lower_confidence_bound"], quiet=True)
    # The next item is graded normally afterwards, and no alarm is left pending.
    grading.check("mask_top", ns["mask_top"], quiet=True)


def test_a_warning_from_correct_code_costs_nothing(capsys):
    ns = namespace('''
import warnings
_correct = mask_top
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    warnings.warn("this is slow", UserWarning)
    return _correct(x, attr, fraction, keep=keep, fill=fill)
''')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # even where warnings would otherwise be errors
        grading.check("mask_top", ns["mask_top"], hidden=True, quiet=True)
    out, err = capsys.readouterr()
    # nbgrader fails a test cell with any stderr output: the warning must go to stdout, once.
    assert err == "" and out.count("UserWarning: this is slow") == 1, (out, err)


def test_grading_twice_gives_the_same_result():
    # A random, wrong SmoothGrad: the feedback (with its numbers) must be identical both times.
    ns = namespace('''
def smoothgrad(model, x, target, *, sigma, samples):
    return sum(gradient(model, x + 2 * sigma * torch.randn_like(x), target) for _ in range(samples)) / samples
''')
    messages = []
    for _ in range(2):
        with pytest.raises(grading.Feedback) as info:
            grading.check("smoothgrad", ns["smoothgrad"], quiet=True)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_not_implemented_and_errors_say_so():
    ns = namespace('''
def fgsm(model, x, y, eps):
    raise NotImplementedError()
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    return x[0]
''')
    with pytest.raises(grading.Feedback, match="not implemented yet"):
        grading.check("fgsm", ns["fgsm"], quiet=True)
    with pytest.raises(grading.Feedback, match=r"shape \(1, 8, 8\), expected \(3, 1, 8, 8\)"):
        grading.check("mask_top", ns["mask_top"], quiet=True)


def test_in_place_modification_is_reported():
    ns = namespace('''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    x_adv += alpha * grad.sign()
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
''')
    with pytest.raises(grading.Feedback, match="modified its input `x_adv` in place"):
        grading.check("pgd_linf_step", ns["pgd_linf_step"], quiet=True)


def test_fresh_restores_a_replaced_check(monkeypatch):
    monkeypatch.setattr(grading, "check", lambda *a, **k: 1)  # what a submission could do
    real = grading.fresh()
    ns = namespace('''
def fgsm(model, x, y, eps):
    return x
''')
    with pytest.raises(real.Feedback, match="no perturbation"):
        real.check("fgsm", ns["fgsm"], quiet=True)


def test_bad_item_name():
    with pytest.raises(ValueError, match="item must be one of"):
        grading.check("fsgm", print)
