"""Checks of the evaluation assignment: Croce & Hein's DLR loss and APGD's step-size rule."""

from __future__ import annotations

import torch
from torch import Tensor

from .compare import fail, unchanged
from .inputs import gen
from .runners import Runner


def _dlr(logits: Tensor, y: Tensor, *, second: bool = False, all_max: bool = False, sign: float = 1.0) -> Tensor:
    """The DLR loss and the variants the diagnosis looks for: the denominator z_(1) - z_(2),
    the maximum over every class (y included), the opposite sign."""
    top = logits.topk(3, dim=1).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits if all_max else logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(),
                                                      float("-inf"))
    spread = top[:, 0] - (top[:, 1] if second else top[:, 2])
    return -sign * (true - others.amax(dim=1)) / (spread + 1e-12)


def _dlr_cases(hidden: bool) -> list[tuple[Tensor, Tensor]]:
    g = gen(110)
    logits = 3 * torch.randn(8, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    y[:3] = logits[:3].argmax(1)  # correctly classified examples, and misclassified ones
    cases = [(logits, y)]
    if hidden:
        big = 2 * torch.randn(64, 10, generator=g, dtype=torch.float64)
        cases += [(100 * big, big.argmax(1)),  # large logits: DLR is invariant to their scale
                  (torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)),
                  (big, torch.randint(0, 10, (64,), generator=g))]
    return cases


def _check_dlr_loss(run: Runner, hidden: bool) -> int:
    from ..attacks import dlr_loss

    cases = _dlr_cases(hidden)
    for logits, y in cases:
        copies = logits.clone(), y.clone()
        got = run(logits, y)
        unchanged(run.item, copies[0], logits, "logits")
        unchanged(run.item, copies[1], y, "y")
        if not isinstance(got, Tensor) or got.shape != (len(y),):
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            fail(run.item, f"return one loss per example, a ({len(y)},) tensor, got {shape} (no mean over the batch: "
                           "APGD tracks each example's loss)")
        got = got.detach().double()
        want = dlr_loss(logits, y)
        if torch.allclose(got, want, rtol=1e-5, atol=1e-7):
            continue
        where = f"on {len(y)} examples with {logits.shape[1]} classes"
        if torch.allclose(got, _dlr(logits, y, sign=-1.0), rtol=1e-5, atol=1e-7):
            fail(run.item, f"{where} your loss has the wrong sign: it must be higher the closer the example is to "
                           "being misclassified, -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))")
        if torch.allclose(got, _dlr(logits, y, second=True), rtol=1e-5, atol=1e-7):
            fail(run.item, f"{where} your denominator is z_(1) - z_(2); DLR divides by z_(1) - z_(3), the largest "
                           "minus the THIRD largest logit (z_(1) - z_(2) is 0 exactly where the attack is close)")
        if torch.allclose(got, _dlr(logits, y, all_max=True), rtol=1e-5, atol=1e-7):
            fail(run.item, f"{where} your numerator takes the maximum over all classes, the true one included; take "
                           "max over j != y (mask z_y out), or every correctly classified example gets loss 0")
        if torch.allclose(got, dlr_loss(logits.softmax(dim=1), y), rtol=1e-5, atol=1e-7):
            fail(run.item, f"{where} you computed the loss on softmax probabilities; DLR uses the logits (that is "
                           "what makes it invariant to their scale, where the softmax saturates)")
        bad = int(((got - want).abs() > 1e-5 + 1e-5 * want.abs()).sum())
        fail(run.item, f"{where} your loss differs from -(z_y - max_(j != y) z_j) / (z_(1) - z_(3)) for {bad} "
                       "examples (z_(i): the i-th largest logit of the example)")
    return len(cases)


def halve(increases: Tensor, interval: int, eta: Tensor, eta_at_last: Tensor, best: Tensor, best_at_last: Tensor,
          rho: float = 0.75, *, strict: bool = True, either: bool = True, use_eta: bool = True,
          best_strict: bool = False) -> Tensor:
    """APGD's rule (Croce & Hein, 2020, Sec. 3.2) and the variants the diagnosis looks for."""
    too_few = increases < rho * interval if strict else increases <= rho * interval
    no_gain = best < best_at_last if best_strict else best <= best_at_last
    stalled = ((eta == eta_at_last) & no_gain) if use_eta else no_gain
    return (too_few | stalled) if either else (too_few & stalled)


def _step_cases(hidden: bool) -> list[tuple]:
    # Examples: many increases; few; exactly rho * interval (no halving: the rule is "fewer than");
    # stalled (step unchanged, best loss unchanged); best unchanged but the step was just halved;
    # best improved.
    increases = torch.tensor([8, 2, 6, 7, 7, 7])
    eta = torch.tensor([0.6, 0.6, 0.6, 0.6, 0.3, 0.6])
    eta_at_last = torch.tensor([0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    best = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.9])
    best_at_last = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.4])
    cases = [(increases, 8, eta, eta_at_last, best, best_at_last, 0.75)]
    if hidden:
        g = gen(120)
        n = 200
        eta = 0.6 * 0.5 ** torch.randint(0, 3, (n,), generator=g)
        eta_at_last = torch.where(torch.rand(n, generator=g) < 0.7, eta, 2 * eta)
        best_at_last = torch.rand(n, generator=g)
        best = torch.where(torch.rand(n, generator=g) < 0.5, best_at_last, best_at_last + torch.rand(n, generator=g))
        cases += [(torch.randint(0, 11, (n,), generator=g), 10, eta, eta_at_last, best, best_at_last, 0.75),
                  (torch.randint(0, 7, (n,), generator=g), 6, eta, eta_at_last, best, best_at_last, 0.5)]
    return cases


def _check_halve_step_size(run: Runner, hidden: bool) -> int:
    cases = _step_cases(hidden)
    for increases, interval, eta, eta_at_last, best, best_at_last, rho in cases:
        args = (increases, interval, eta, eta_at_last, best, best_at_last)
        copies = [t.clone() if isinstance(t, Tensor) else t for t in args]
        got = run(*args, rho=rho)
        for before, after, name in zip(copies, args, ("increases", "interval", "eta", "eta_at_last", "best",
                                                      "best_at_last")):
            if isinstance(before, Tensor):
                unchanged(run.item, before, after, name)
        if not isinstance(got, Tensor) or got.shape != increases.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            fail(run.item, f"return one decision per example, a ({len(increases)},) bool tensor, got {shape}: APGD "
                           "halves each example's step size on its own")
        got = got.bool()
        want = halve(*args, rho=rho)
        if torch.equal(got, want):
            continue
        for keywords, hint in (({"strict": False}, "an example with exactly rho * interval increases keeps its step "
                                                   "size: halve when FEWER than rho * interval steps raised the loss"),
                               ({"either": False}, "either condition halves the step size (or, not and)"),
                               ({"use_eta": False}, "the second condition needs BOTH an unchanged step size since the "
                                                    "last checkpoint and no gain in the best loss; an example whose "
                                                    "step was just halved gets another interval"),
                               ({"best_strict": True}, "'no gain' includes a best loss EQUAL to the one at the last "
                                                       "checkpoint (best <= best_at_last)")):
            if torch.equal(got, halve(*args, rho=rho, **keywords)):
                fail(run.item, hint)
        if rho != 0.75 and torch.equal(got, halve(*args, rho=0.75)):
            fail(run.item, f"you used rho = 0.75 where the call passed rho={rho:g}: use the argument")
        bad = int((got != want).sum())
        fail(run.item, f"your decision differs for {bad} of {len(want)} examples: halve when increases < rho * "
                       "interval, or when eta == eta_at_last and best <= best_at_last")
    return len(cases)
