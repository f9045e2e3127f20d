"""Cohen, Rosenfeld & Kolter (2019), Algorithms 1 (CERTIFY) and 2 (PREDICT), for one image.

Sampling is batched (no Python loop over samples) and counted with ``bincount``. The noise is
drawn in fixed blocks of ``NOISE_BLOCK`` samples whatever ``batch_size`` is, so the same
generator state gives the same counts for every batch size. The one-sided Clopper–Pearson
bound turns the counts into a certificate.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from torch import Tensor, nn

from .._checks import check_generator, check_images, check_logits_shape, check_number, eval_mode

__all__ = ["ABSTAIN", "NOISE_BLOCK", "Certificate", "sample_counts", "lower_confidence_bound",
           "certificate_from_counts", "predict", "certify"]


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
