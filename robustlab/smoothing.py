"""Randomized smoothing: Cohen, Rosenfeld & Kolter (2019), Algorithms 1 (CERTIFY) and 2 (PREDICT).

The smoothed classifier ``g(x) = argmax_c P(f(x + noise) = c)`` with ``noise ~ N(0, sigma^2 I)``
in pixel space (normalisation lives inside the model). If the top class has probability at
least ``pA > 1/2``, ``g`` is constant within the L2 ball of radius ``sigma * Phi^-1(pA)``
(Theorem 1). ``certify`` replaces ``pA`` by a one-sided Clopper–Pearson lower bound from
Monte Carlo counts, so the certificate holds with probability at least ``1 - alpha``.

Sampling is batched (no Python loop over samples) and counted with ``bincount``. The noise is
drawn in fixed blocks of ``NOISE_BLOCK`` samples whatever ``batch_size`` is, so the same
generator state gives the same counts for every batch size.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._checks import check_generator, check_images, check_labels, check_logits_shape, check_number, eval_mode

__all__ = [
    "ABSTAIN",
    "NOISE_BLOCK",
    "Certificate",
    "CertificationResults",
    "sample_counts",
    "lower_confidence_bound",
    "certificate_from_counts",
    "predict",
    "certify",
    "certify_dataset",
    "certified_accuracy",
    "average_certified_radius",
    "plot_certified_accuracy",
]

ABSTAIN = -1
"""The class returned when the smoothed classifier abstains."""

NOISE_BLOCK = 500
"""Noise is generated this many samples at a time, whatever the batch size (see module doc)."""


class Certificate(NamedTuple):
    """The output of :func:`certify`.

    Attributes:
        prediction: the certified class, or ``ABSTAIN`` (-1).
        radius: the certified L2 radius in pixel units (0.0 when abstaining).
    """

    prediction: int
    radius: float


def _check_alpha(alpha: object) -> None:
    check_number(alpha, "alpha", low=0.0, strict=True)
    if alpha >= 1.0:
        raise ValueError(f"alpha must lie in (0, 1): it is the failure probability, e.g. 0.001; "
                         f"got {alpha!r}")


def _check_settings(sigma: object, batch_size: object, **counts: object) -> None:
    check_number(sigma, "sigma", low=0.0, strict=True)
    for name, value in counts.items():
        check_number(value, name, low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)


def _check_one_image(x: object) -> Tensor:
    """Checks that ``x`` is one (C, H, W) image in [0, 1]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor holding one image (C, H, W), got {type(x).__name__}")
    if x.dim() == 4:
        raise ValueError(
            f"x must be one image of shape (C, H, W), got shape {tuple(x.shape)} with a batch "
            f"dimension; pass x[0], or use certify_dataset for a batch of images"
        )
    if x.dim() != 3:
        raise ValueError(f"x must be one image of shape (C, H, W), got shape {tuple(x.shape)}")
    check_images(x.unsqueeze(0), "x")
    return x


def sample_counts(model: nn.Module, x: Tensor, *, sigma: float, n: int, batch_size: int = 1000,
                  generator: torch.Generator | None = None) -> Tensor:
    """How often the base classifier predicts each class on ``n`` noisy copies of ``x``.

    The copies are ``x + sigma * noise`` with standard normal noise and no clamping (Cohen et
    al. smooth over all of R^d). The model runs in eval mode under ``torch.inference_mode`` and
    is left as found. At most ``max(batch_size, NOISE_BLOCK)`` noisy images exist at once.

    Args:
        model: maps (B, C, H, W) images to (B, K) logits (or any scores whose argmax is the class).
        x: one image, (C, H, W), in [0, 1].
        sigma: noise standard deviation in pixel units, > 0.
        n: number of noisy samples, >= 1.
        batch_size: noisy images per forward pass.
        generator: source of the noise; the same state gives the same counts.

    Returns:
        (K,) int64 counts on the device of ``x``, summing to ``n``.
    """
    x = _check_one_image(x)
    _check_settings(sigma, batch_size, n=n)
    check_generator(generator, x)
    return _counts(model, x, sigma, n, batch_size, generator)


def _counts(model: nn.Module, x: Tensor, sigma: float, n: int, batch_size: int,
            generator: torch.Generator | None) -> Tensor:
    """``sample_counts`` on checked arguments."""
    # A group is the noise of whole blocks that is forwarded in slices of batch_size, so that
    # the random stream is cut the same way for every batch_size.
    group = max(1, batch_size // NOISE_BLOCK) * NOISE_BLOCK
    counts = None
    x = x.detach()
    with eval_mode(model), torch.inference_mode():
        buffer = torch.empty((min(group, n), *x.shape), dtype=x.dtype, device=x.device)
        done = 0
        while done < n:
            size = min(group, n - done)
            noisy = buffer[:size]
            for start in range(0, size, NOISE_BLOCK):
                noisy[start:start + NOISE_BLOCK].normal_(0.0, sigma, generator=generator)
            noisy.add_(x)
            for start in range(0, size, batch_size):
                batch = noisy[start:start + batch_size]
                logits = model(batch)
                if counts is None:
                    check_logits_shape(logits, batch.shape[0])
                    counts = torch.zeros(logits.shape[1], dtype=torch.int64, device=x.device)
                counts += torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
            done += size
    return counts.clone()  # a normal tensor, usable outside inference mode


def lower_confidence_bound(count: int, n: int, *, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper–Pearson lower bound on a binomial proportion.

    ``beta.ppf(alpha, count, n - count + 1)``, and 0 when ``count`` is 0 (Cohen et al.'s
    LowerConfBound; equal to statsmodels' ``proportion_confint(count, n, 2 * alpha, "beta")[0]``).

    Args:
        count: successes, 0 <= count <= n.
        n: trials, >= 1.
        alpha: failure probability in (0, 1).
    """
    check_number(count, "count", low=0, integer=True)
    check_number(n, "n", low=1, integer=True)
    _check_alpha(alpha)
    if count > n:
        raise ValueError(f"count must be <= n, got count={count}, n={n}")
    if count == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, count, n - count + 1))


def certificate_from_counts(prediction: int, count: int, n: int, *, sigma: float,
                            alpha: float) -> Certificate:
    """The certificate for class ``prediction`` seen ``count`` times in ``n`` independent samples.

    With ``pA_lower = lower_confidence_bound(count, n, alpha)``: abstain when ``pA_lower < 1/2``,
    else the radius is ``sigma * Phi^-1(pA_lower)`` (Cohen et al., Algorithm 1).
    """
    check_number(sigma, "sigma", low=0.0, strict=True)
    p_lower = lower_confidence_bound(count, n, alpha=alpha)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0)
    return Certificate(int(prediction), float(sigma * norm.ppf(p_lower)))


def predict(model: nn.Module, x: Tensor, *, sigma: float, n: int, alpha: float,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> int:
    """The smoothed classifier's prediction for one image (Cohen et al., Algorithm 2).

    Counts the base classifier's classes on ``n`` noisy copies; returns the top class if a
    two-sided binomial test of its count against the runner-up's rejects equality at level
    ``alpha`` (``scipy.stats.binomtest``), else ``ABSTAIN``. The probability of returning a
    class other than ``g(x)`` is at most ``alpha``.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: one image, (C, H, W), in [0, 1].
        sigma: noise standard deviation in pixel units, > 0.
        n: number of noisy samples, >= 1.
        alpha: failure probability in (0, 1), e.g. 0.001.
        batch_size: noisy images per forward pass.
        generator: source of the noise; the same state gives the same answer.

    Returns:
        the class index, or ``ABSTAIN`` (-1).
    """
    x = _check_one_image(x)
    _check_settings(sigma, batch_size, n=n)
    _check_alpha(alpha)
    check_generator(generator, x)
    counts = _counts(model, x, sigma, n, batch_size, generator).cpu()
    if counts.numel() == 1:
        top, n_a, n_b = 0, int(counts[0]), 0
    else:
        values, classes = counts.topk(2)
        top, n_a, n_b = int(classes[0]), int(values[0]), int(values[1])
    if binomtest(n_a, n_a + n_b, p=0.5).pvalue > alpha:
        return ABSTAIN
    return top


def certify(model: nn.Module, x: Tensor, *, sigma: float, n0: int, n: int, alpha: float,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> Certificate:
    """Certify the smoothed classifier at one image (Cohen et al., Algorithm 1).

    The class is chosen from ``n0`` noisy samples; its count in ``n`` further, independent
    samples gives the lower bound ``pA_lower`` (Clopper–Pearson, level ``1 - alpha``). If
    ``pA_lower >= 1/2`` the smoothed classifier is certified to return that class within the
    L2 radius ``sigma * Phi^-1(pA_lower)`` with probability at least ``1 - alpha``; otherwise
    it abstains.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: one image, (C, H, W), in [0, 1].
        sigma: noise standard deviation in pixel units, > 0.
        n0: samples for choosing the class, >= 1 (Cohen et al. use 100).
        n: samples for the bound, >= 1 (Cohen et al. use 100,000).
        alpha: failure probability in (0, 1), e.g. 0.001.
        batch_size: noisy images per forward pass (bounds the memory).
        generator: source of the noise; the same state gives the same certificate.

    Returns:
        ``Certificate(prediction, radius)``; ``(ABSTAIN, 0.0)`` when abstaining.
    """
    x = _check_one_image(x)
    _check_settings(sigma, batch_size, n0=n0, n=n)
    _check_alpha(alpha)
    check_generator(generator, x)
    return _certify(model, x, sigma, n0, n, alpha, batch_size, generator)


def _certify(model: nn.Module, x: Tensor, sigma: float, n0: int, n: int, alpha: float, batch_size: int,
             generator: torch.Generator | None) -> Certificate:
    """``certify`` on checked arguments: selection and estimation draw in turn from one generator."""
    selection = _counts(model, x, sigma, n0, batch_size, generator)
    top = int(selection.argmax())
    count = int(_counts(model, x, sigma, n, batch_size, generator)[top])
    return certificate_from_counts(top, count, n, sigma=sigma, alpha=alpha)


@dataclass(frozen=True)
class CertificationResults:
    """Per-image certificates from :func:`certify_dataset`: one row per image.

    Attributes:
        index: (N,) position of the image in the certified set.
        label: (N,) true class.
        prediction: (N,) certified class or ``ABSTAIN``.
        radius: (N,) certified L2 radius (0.0 when abstaining), float64.
        correct: (N,) bool, prediction == label.
        time: (N,) seconds spent on each image, float64.
        sigma, n0, n, alpha: the settings used.
    """

    index: Tensor
    label: Tensor
    prediction: Tensor
    radius: Tensor
    correct: Tensor
    time: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float
    columns: tuple[str, ...] = field(default=("index", "label", "prediction", "radius", "correct", "time"),
                                     init=False, repr=False)

    def __len__(self) -> int:
        return int(self.index.numel())

    def rows(self) -> list[dict]:
        """The table as a list of dicts: the per-image ``columns`` plus the settings."""
        cols = {c: getattr(self, c).tolist() for c in self.columns}
        settings = {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha}
        return [{**{c: cols[c][i] for c in self.columns}, **settings} for i in range(len(self))]

    def to_csv(self, path: str | Path) -> None:
        """Writes one row per image: ``columns``, then sigma, n0, n and alpha (the same in every
        row, so that the file describes itself; :meth:`from_csv` reads it back)."""
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*self.columns, "sigma", "n0", "n", "alpha"])
            writer.writeheader()
            writer.writerows(self.rows())

    @classmethod
    def from_csv(cls, path: str | Path) -> "CertificationResults":
        """Reads a table written by :meth:`to_csv`."""
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{path} holds no certificates")
        missing = {"index", "label", "prediction", "radius", "correct", "time", "sigma", "n0", "n",
                   "alpha"} - set(rows[0])
        if missing:
            raise ValueError(f"{path} is not a CertificationResults table: it lacks the columns "
                             f"{sorted(missing)}; write it with CertificationResults.to_csv")
        col = lambda name, kind: [kind(r[name]) for r in rows]
        return cls(
            index=torch.tensor(col("index", int)), label=torch.tensor(col("label", int)),
            prediction=torch.tensor(col("prediction", int)),
            radius=torch.tensor(col("radius", float), dtype=torch.float64),
            correct=torch.tensor(col("correct", lambda v: v == "True")),
            time=torch.tensor(col("time", float), dtype=torch.float64),
            sigma=float(rows[0]["sigma"]), n0=int(rows[0]["n0"]), n=int(rows[0]["n"]),
            alpha=float(rows[0]["alpha"]),
        )


def certify_dataset(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float, n0: int, n: int,
                    alpha: float, batch_size: int = 1000, generator: torch.Generator | None = None,
                    progress: bool = True) -> CertificationResults:
    """:func:`certify` for each image of a batch, with a tqdm progress bar.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        sigma, n0, n, alpha, batch_size, generator: as in :func:`certify`; one generator is used
            for all images in turn.
        progress: show a progress bar.

    Returns:
        a :class:`CertificationResults` table.
    """
    x = check_images(x)
    y = check_labels(y, x)
    _check_settings(sigma, batch_size, n0=n0, n=n)
    _check_alpha(alpha)
    check_generator(generator, x)
    predictions, radii, times = [], [], []
    bar = tqdm(range(x.shape[0]), desc=f"certify sigma={sigma:g}", disable=not progress, unit="img")
    correct_so_far = 0
    for i in bar:
        start = time.perf_counter()
        cert = _certify(model, x[i], sigma, n0, n, alpha, batch_size, generator)
        times.append(time.perf_counter() - start)
        predictions.append(cert.prediction)
        radii.append(cert.radius)
        correct_so_far += cert.prediction == int(y[i])
        bar.set_postfix(certified=f"{correct_so_far}/{i + 1}", refresh=False)
    prediction = torch.tensor(predictions, dtype=torch.int64)
    label = y.detach().cpu()
    return CertificationResults(
        index=torch.arange(x.shape[0]), label=label, prediction=prediction,
        radius=torch.tensor(radii, dtype=torch.float64), correct=prediction == label,
        time=torch.tensor(times, dtype=torch.float64), sigma=float(sigma), n0=int(n0), n=int(n),
        alpha=float(alpha),
    )


def _check_results(results: object) -> CertificationResults:
    if not isinstance(results, CertificationResults):
        raise TypeError(f"results must be the CertificationResults returned by certify_dataset, "
                        f"got {type(results).__name__}")
    return results


def certified_accuracy(results: CertificationResults, radii: float | Sequence[float] | Tensor) -> Tensor:
    """Fraction of images certified correctly at L2 radius at least r, for each r in ``radii``.

    An image counts at r when its certified class is its label and its certified radius is
    >= r (Cohen et al.'s certified test-set accuracy; abstentions never count).

    Returns:
        float64 tensor with one accuracy per radius (a 0-d tensor for a single radius).
    """
    results = _check_results(results)
    r = torch.as_tensor(radii, dtype=torch.float64)
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError(f"radii must be finite and >= 0, got {r.tolist()}")
    if len(results) == 0:
        raise ValueError("results is empty: certify at least one image")
    ok = results.correct[:, None] & (results.radius[:, None] >= r.reshape(1, -1))  # (N, R)
    return ok.double().mean(dim=0).reshape(r.shape)


def average_certified_radius(results: CertificationResults) -> float:
    """The average certified radius (ACR): mean over images of the radius if correct, else 0.

    This is the usual definition (Zhai et al., 2020, MACER); it rewards both accuracy and
    radius. ``results.radius[results.correct].mean()`` is the mean radius of the correctly
    certified images instead.
    """
    results = _check_results(results)
    if len(results) == 0:
        raise ValueError("results is empty: certify at least one image")
    return float((results.radius * results.correct).mean())


def plot_certified_accuracy(runs: Mapping[str, CertificationResults], *, ax=None, max_radius: float | None = None,
                            points: int = 301):
    """Certified accuracy against L2 radius, one curve per run (Cohen et al., Figure 6 style).

    Args:
        runs: label -> results, e.g. ``{"sigma = 0.25": res_025, ...}``.
        ax: a matplotlib Axes to draw on (default: a new figure).
        max_radius: right end of the radius axis (default: the largest certified radius, +5 %).
        points: radii evaluated per curve.

    Returns:
        the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("runs is empty: pass a dict such as {'sigma = 0.5': results}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    top = max_radius if max_radius is not None else 1.05 * max(float(r.radius.max()) for r in runs.values())
    radii = torch.linspace(0.0, max(top, 1e-3), points, dtype=torch.float64)
    for label, results in runs.items():
        ax.plot(radii.numpy(), certified_accuracy(results, radii).numpy(), label=label)
    ax.set_xlabel("L2 radius (pixel units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(0.0, float(radii[-1]))
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
