"""Attacks in the Linf and L2 threat models.

- ``fgsm``, ``fgm``, ``pgd``: the gradient attacks of Goodfellow et al. and Madry et al.;
- ``apgd``: Auto-PGD with the CE and DLR losses and its targeted version APGD-T (Croce & Hein,
  2020);
- ``square``: the score-based, gradient-free Square attack (Andriushchenko et al., 2020);
- ``fmn``: the fast minimum-norm attack (Pintor et al., 2021);
- ``pgd_step`` and the threat models' geometry (``geometry("linf")``) they all share.

All attacks share one contract (see CONVENTIONS.md): images ``x`` are (N, C, H, W) in [0, 1],
``eps`` is in pixel units, the result stays in the eps-ball around ``x`` and in [0, 1], the model
is run in eval mode and left exactly as found, ``x`` is never modified, and gradients are taken
w.r.t. the input only. ``robust_accuracy`` and the attack suite live in ``robustlab.evaluate``
(``robust_accuracy`` is importable from here too).
"""

from ._geometry import L2, NORMS, Geometry, Linf, default_alpha, geometry, pgd_step
from ._loss import LOSSES, dlr_loss, margin, per_example_loss, targeted_dlr_loss
from .apgd import APGD_LOSSES, apgd
from .apgd import checkpoints as apgd_checkpoints
from .fmn import MinNorm, fmn
from .pgd import fgm, fgsm, pgd
from .square import square
from .square import window_fraction as square_window_fraction

__all__ = [
    "fgsm", "fgm", "pgd", "pgd_step", "apgd", "square", "fmn", "MinNorm",
    "NORMS", "LOSSES", "APGD_LOSSES", "Geometry", "Linf", "L2", "geometry", "default_alpha", "apgd_checkpoints",
    "square_window_fraction", "per_example_loss", "margin", "dlr_loss", "targeted_dlr_loss",
]


def __getattr__(name: str):
    # robust_accuracy moved to robustlab.evaluate, which imports this package: resolve lazily.
    if name in ("robust_accuracy", "RobustAccuracy"):
        from .. import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'robustlab.attacks' has no attribute {name!r}")
