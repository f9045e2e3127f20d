"""Evaluating robustness: accuracy, worst-case accuracy over attacks, transfer, and the attack suite.

A robust accuracy is only an upper bound, as good as the strongest attack tried.
:func:`attack_suite` runs the AutoAttack protocol of Croce & Hein (2020) — APGD-CE, then APGD-T
with the targeted DLR loss, then the gradient-free Square attack, each only on the examples
still standing — and the masking checks of :mod:`robustlab.masking`, and reports per example
which attack broke it.

One concept a file: :mod:`.accuracy` (accuracy, robust_accuracy, transfer_matrix) and
:mod:`.suite` (the attack suite); every public name is importable from here.
"""

from .accuracy import Attack, RobustAccuracy, accuracy, robust_accuracy, transfer_matrix
from .suite import BROKEN_BY_NAMES, SUITES, SuiteResult, attack_suite, describe_suite, state_digest

__all__ = ["accuracy", "robust_accuracy", "RobustAccuracy", "transfer_matrix", "attack_suite",
           "SuiteResult", "SUITES", "describe_suite", "BROKEN_BY_NAMES", "state_digest", "Attack"]
