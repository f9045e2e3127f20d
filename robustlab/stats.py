"""Uncertainty of measured rates: every accuracy on a finite test set is an estimate.

An accuracy measured on ``n`` examples is a binomial proportion; on 1,000 MNIST digits a
robust accuracy near 88 % is known to about +-2 points (95 %), so two numbers closer than that
are not shown to differ. :func:`proportion_interval` gives the exact (Clopper–Pearson) interval
for such a proportion; the course quotes it beside every measured rate. Two models measured on
the *same* examples are compared with :func:`paired_test` (McNemar's exact test), which only
counts the examples on which they disagree and is far more sensitive than comparing intervals.
"""

from __future__ import annotations

from scipy.stats import binomtest

from ._checks import check_number

__all__ = ["proportion_interval", "paired_test"]


def proportion_interval(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided (Clopper–Pearson) confidence interval for a binomial proportion.

    Args:
        successes: how many of the ``n`` trials succeeded (e.g. examples still classified
            correctly after the attack suite), 0 <= successes <= n.
        n: number of trials, >= 1.
        level: confidence level, in (0, 1).

    Returns:
        ``(low, high)``, fractions in [0, 1] with ``low <= successes / n <= high``. It is
        conservative: it covers the true proportion with probability at least ``level``.

    Example:
        >>> low, high = proportion_interval(880, 1000)
        >>> round(low, 3), round(high, 3)
        (0.858, 0.899)
    """
    check_number(n, "n", low=1, integer=True)
    check_number(successes, "successes", low=0, integer=True)
    if successes > n:
        raise ValueError(f"successes must be <= n = {n}, got {successes}")
    check_number(level, "level", low=0.0, strict=True)
    if not level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}; e.g. level=0.95")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def paired_test(correct_a, correct_b) -> float:
    """McNemar's exact test: do two classifiers' accuracies on the same examples differ?

    Only the discordant examples count: ``b`` right for A and wrong for B, ``c`` the reverse.
    Under the null hypothesis (equal accuracy) each discordant example falls either way with
    probability 1/2, so the two-sided p-value is that of a binomial test of ``b`` out of
    ``b + c`` against 1/2 (1.0 when they never disagree).

    Args:
        correct_a: per example, whether A was right: a bool tensor, array or sequence, (N,).
        correct_b: the same for B, on the same examples in the same order, (N,).

    Returns:
        The two-sided p-value; below 0.05, the difference is significant at the 5 % level.
    """
    a = [bool(v) for v in (correct_a.tolist() if hasattr(correct_a, "tolist") else correct_a)]
    b_ = [bool(v) for v in (correct_b.tolist() if hasattr(correct_b, "tolist") else correct_b)]
    if len(a) != len(b_):
        raise ValueError(f"correct_a and correct_b must cover the same examples, got {len(a)} and {len(b_)} "
                         "values; pass both models' results on the same digits, in the same order")
    b = sum(x and not y for x, y in zip(a, b_))
    c = sum(y and not x for x, y in zip(a, b_))
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, p=0.5).pvalue)
