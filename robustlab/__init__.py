"""robustlab: reference implementations for a course on adversarial robustness and
interpretability.

Every algorithm takes images ``x`` of shape (N, C, H, W) in [0, 1] and labels ``y`` of shape
(N,) int64; normalisation lives inside the model (``robustlab.models.Normalize``), so ``eps``
is always in pixel units.
"""

from . import attacks, data, models, report, saliency, smoothing, testing, train, zoo
from .attacks import fgm, fgsm, pgd, robust_accuracy

__version__ = "0.1.0"
__all__ = ["attacks", "data", "models", "report", "saliency", "smoothing", "testing", "train", "zoo", "fgsm", "fgm", "pgd",
           "robust_accuracy"]
