"""Uncertainty of measured rates: every accuracy on a finite test set is an estimate.

An accuracy measured on ``n`` examples is a binomial proportion; on 1,000 MNIST digits a
robust accuracy near 88 % is known to about +-2 points (95 %), so two numbers closer than that
are not shown to differ. :func:`proportion_interval` gives the exact (Clopper–Pearson) interval
for such a proportion; the course quotes it beside every measured rate.
"""

from __future__ import annotations

from scipy.stats import binomtest

from ._checks import check_number

__all__ = ["proportion_interval"]


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
