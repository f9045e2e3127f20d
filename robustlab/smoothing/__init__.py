"""Randomized smoothing: Cohen, Rosenfeld & Kolter (2019), Algorithms 1 (CERTIFY) and 2 (PREDICT).

The smoothed classifier ``g(x) = argmax_c P(f(x + noise) = c)`` with ``noise ~ N(0, sigma^2 I)``
in pixel space (normalisation lives inside the model). If the top class has probability at
least ``pA > 1/2``, ``g`` is constant within the L2 ball of radius ``sigma * Phi^-1(pA)``
(Theorem 1). ``certify`` replaces ``pA`` by a one-sided Clopper–Pearson lower bound from
Monte Carlo counts, so the certificate holds with probability at least ``1 - alpha``.

Sampling is batched (no Python loop over samples) and counted with ``bincount``. The noise is
drawn in fixed blocks of ``NOISE_BLOCK`` samples whatever ``batch_size`` is, so the same
generator state gives the same counts for every batch size.

One concept a file: :mod:`.algorithms` (sampling, the Clopper–Pearson bound, PREDICT and
CERTIFY for one image) and :mod:`.dataset` (:func:`certify_dataset`, resumable from a
checkpoint, its table :class:`CertificationResults` and the summaries); every public name is
importable from here.
"""

from .algorithms import (
    ABSTAIN,
    NOISE_BLOCK,
    Certificate,
    certificate_from_counts,
    certify,
    lower_confidence_bound,
    predict,
    sample_counts,
)
from .dataset import (
    CertificationResults,
    average_certified_radius,
    certified_accuracy,
    certify_dataset,
    plot_certified_accuracy,
)

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
