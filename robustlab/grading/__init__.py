"""Checks for the course's nbgrader exercises: a student's function against the reference.

Each graded item of ``exercises/`` has a test cell::

    from robustlab import grading
    grading.check("fgsm", fgsm)                       # visible: a first check, in the kernel
    ### BEGIN HIDDEN TESTS
    grading.fresh().check("fgsm", fgsm, hidden=True)  # what the autograder grades
    ### END HIDDEN TESTS

While a student works, :func:`check` runs in their kernel and raises :class:`Feedback` with a
message they can act on. When the instructor autogrades, nbgrader's preprocessors of
:mod:`robustlab.grading.nbgrader` take every test cell's checks *out of the student's kernel*:
:func:`grade` runs the notebook's setup cells and the student's solution cells in a fresh, walled
interpreter (:mod:`robustlab.grading.worker`, :mod:`robustlab.grading.sandbox`), calls the
student's function there on the checks' inputs, and compares what comes back with the reference
in a process that never runs student code. The threat model (tampering in the kernel, escaping the
delegation monitor, work deferred past the call, oracles, the instructor's files), what stops each
and what remains possible are written down in the book's exercises appendix
(``book/exercises.md``); :mod:`robustlab.grading.sandbox` lists the walls.

Layout: ``items`` (the registry, :func:`check`, :func:`grade`), one module of checks per
assignment (``attacks``, ``training``, ``gradreg``, ``smoothing``, ``saliency``,
``interpretability``), ``compare`` and ``inputs`` (their helpers), ``runners`` and ``remote``
(calling the student's function in the kernel and in the worker), ``calls`` (one call's record
and plain values), ``worker`` and ``sandbox``, ``notebook`` (reading nbgrader notebooks) and
``nbgrader`` (the autograde preprocessors).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .feedback import Feedback
from .items import ITEMS, Result, check, grade
from .runners import BUDGET_FACTOR, TIME_LIMIT

__all__ = ["Feedback", "check", "grade", "Result", "ITEMS", "TIME_LIMIT", "BUDGET_FACTOR", "fresh"]


def fresh() -> ModuleType:
    """This package re-imported, its names bound again from its modules (a kernel in which
    ``grading.check`` was replaced gets the real one back). Only for the quick checks in the
    kernel: grades come from :func:`grade`, outside it, where nothing of the kernel counts."""
    return importlib.reload(sys.modules[__name__])
