"""robustlab: reference implementations for a course on adversarial robustness and
interpretability.

Every algorithm takes images ``x`` of shape (N, C, H, W) in [0, 1] and labels ``y`` of shape
(N,) int64; normalisation lives inside the model (``robustlab.models.Normalize``), so ``eps``
is always in pixel units.
"""

from . import attacks, bounds, data, evaluate, masking, models, report, saliency, smoothing, stats, testing, train, zoo
from .attacks import apgd, fgm, fgsm, fmn, pgd, pgd_step, square
from .evaluate import attack_suite, robust_accuracy

__version__ = "0.1.0"
__all__ = ["attacks", "bounds", "data", "evaluate", "masking", "models", "report", "saliency", "smoothing", "stats",
           "testing", "train", "zoo", "fgsm", "fgm", "pgd", "pgd_step", "apgd", "square", "fmn", "robust_accuracy",
           "attack_suite"]
