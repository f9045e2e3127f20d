"""The record of a measured claim, its verdict and its bootstrap interval."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import scipy.stats
from torch import Tensor

from .._checks import check_number

__all__ = ["VERDICTS", "Claim", "verdict", "paired_bootstrap", "bootstrap", "make_claim",
           "STANDARD", "ROBUST", "L2_ROBUST"]

VERDICTS = ("supported", "not supported", "inconclusive")

STANDARD, ROBUST, L2_ROBUST = "mnist-standard", "mnist-pgd-linf-0.3", "mnist-pgd-l2-2.0"


class Claim(NamedTuple):
    """One measured claim.

    Attributes:
        name: identifier (the function's name without ``claim_``), used by the pages' markers.
        statement: the sentence the measurement tests, as the book would state it.
        effect: the measured effect; positive means the statement holds.
        low, high: its 95 % confidence interval.
        verdict: one of :data:`VERDICTS`.
        detail: how it was measured (models, digits, control, protocol, the compared numbers).
    """

    name: str
    statement: str
    effect: float
    low: float
    high: float
    verdict: str
    detail: dict[str, Any]


def verdict(low: float, high: float) -> str:
    """"supported" if ``low > 0``, "not supported" if ``high < 0``, else "inconclusive"."""
    check_number(low, "low", low=-float("inf"))
    check_number(high, "high", low=low)
    if low > 0:
        return "supported"
    if high < 0:
        return "not supported"
    return "inconclusive"


def paired_bootstrap(diff: Tensor | np.ndarray, *, resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-example differences and its percentile bootstrap interval.

    Args:
        diff: (N,) per-example differences (e.g. metric of model A minus model B on the same
            digits), N >= 2; or (R, N): the same N digits under R repeats (retraining seeds,
            noise draws), R >= 1. A 2-D ``diff`` is resampled in two stages, the repeats and the
            digits (each with replacement), so the interval covers both sources of variation;
            with R = 1 it is the 1-D bootstrap. A percentile bootstrap over a handful of repeats
            cannot reach beyond the repeats it has, so for R >= 2 the interval is widened to
            contain Student's t-interval of the R per-repeat means as well (the wider of the two
            at each end).
        resamples: bootstrap resamples.
        level: confidence level, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(mean, low, high)``.
    """
    d = np.asarray(diff.detach().cpu().double().numpy() if isinstance(diff, Tensor) else diff, dtype=np.float64)
    if d.ndim == 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim not in (1, 2) or d.shape[0] < 1 or d.shape[-1] < 2 or not np.isfinite(d).all():
        raise ValueError(f"diff must be a 1-D array of at least 2 finite values, or a 2-D (repeats, N) one with "
                         f"repeats >= 1 and N >= 2, got shape {d.shape}")
    check_number(resamples, "resamples", low=1, integer=True)
    check_number(level, "level", low=0.0, strict=True)
    if not level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    if d.ndim == 1:
        means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    else:
        r, n = d.shape
        rows = rng.integers(0, r, size=(resamples, r))
        cols = rng.integers(0, n, size=(resamples, n))
        means = np.array([d[np.ix_(i, j)].mean() for i, j in zip(rows, cols)])
    tail = (1 - level) / 2
    low, high = float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
    if d.ndim == 2:
        per_repeat = d.mean(axis=1)
        half = float(scipy.stats.t.ppf(1 - tail, df=d.shape[0] - 1) * per_repeat.std(ddof=1) / np.sqrt(d.shape[0]))
        low, high = min(low, float(d.mean()) - half), max(high, float(d.mean()) + half)
    return float(d.mean()), low, high


def bootstrap(statistic: Callable[..., float], *arrays: Tensor | np.ndarray, resamples: int = 2000,
              level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Any statistic of paired samples and its percentile bootstrap interval.

    The rows of every array (one row per digit, say) are resampled together, so pairs stay
    paired; e.g. ``bootstrap(spearman, alignment, distance)`` for a correlation over digits.

    Args:
        statistic: maps arrays of the same kinds (resampled rows) to a number.
        arrays: (N, ...) arrays with the same N >= 2.
        resamples: bootstrap resamples.
        level: confidence level, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(statistic on the data, low, high)``.
    """
    data = [np.asarray(a.detach().cpu().double().numpy() if isinstance(a, Tensor) else a, dtype=np.float64)
            for a in arrays]
    if not data:
        raise ValueError("bootstrap needs at least one array, got none")
    n = data[0].shape[0] if data[0].ndim else 0
    if n < 2 or any(a.ndim == 0 or a.shape[0] != n for a in data):
        raise ValueError(f"arrays must share a first dimension N >= 2, got shapes {[a.shape for a in data]}")
    if not all(np.isfinite(a).all() for a in data):
        raise ValueError("arrays hold NaN or inf values; drop those rows (e.g. where an attack found nothing) first")
    check_number(resamples, "resamples", low=1, integer=True)
    check_number(level, "level", low=0.0, strict=True)
    if not level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(*(a[idx] for a in data))
                       for idx in rng.integers(0, n, size=(resamples, n))], dtype=np.float64)
    tail = (1 - level) / 2
    return float(statistic(*data)), float(np.nanquantile(values, tail)), float(np.nanquantile(values, 1 - tail))


def make_claim(name: str, statement: str, diff: Tensor | np.ndarray, detail: dict[str, Any]) -> Claim:
    """A :class:`Claim` from per-example differences (positive: the statement holds), (N,) or
    (repeats, N), with the paired bootstrap interval of their mean (:func:`paired_bootstrap`)."""
    mean, low, high = paired_bootstrap(diff)
    return Claim(name, statement, mean, low, high, verdict(low, high), detail)
