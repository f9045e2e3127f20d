"""The graded items: each item's check and the reference modules a student's function may not
call into; :func:`check` (in the student's kernel) and :func:`grade` (outside it)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings
from typing import Callable, Iterable

import torch

from . import attacks, evaluation, gradreg, interpretability, saliency, smoothing, training
from .feedback import Feedback
from .runners import LocalRunner, Runner
from .sandbox import PEER_PACKAGES

__all__ = ["ITEMS", "check", "grade", "Result"]

# item -> (check, modules the student's function must not call into)
ITEMS: dict[str, tuple[Callable[[Runner, bool], int], tuple[str, ...]]] = {
    "fgsm": (attacks._check_fgsm, ("robustlab.attacks",)),
    "pgd_linf_step": (lambda run, hidden: attacks._check_step(run, hidden, "linf"), ("robustlab.attacks",)),
    "pgd_l2_step": (lambda run, hidden: attacks._check_step(run, hidden, "l2"), ("robustlab.attacks",)),
    "pgd_attack": (attacks._check_pgd_attack, ("robustlab.attacks",)),
    "dlr_loss": (evaluation._check_dlr_loss, ("robustlab.attacks", "robustlab.evaluate")),
    "halve_step_size": (evaluation._check_halve_step_size, ("robustlab.attacks", "robustlab.evaluate")),
    # The training items may use robustlab.pgd for the inner maximisation (their contract says so).
    "pgd_at_epoch": (training._check_pgd_at_epoch, ("robustlab.train",)),
    "evaluate": (training._check_evaluate, ("robustlab.train", "robustlab.report", "robustlab.evaluate")),
    "fgsm_rs_epoch": (training._check_fgsm_rs_epoch, ("robustlab.train",)),
    "trades_loss": (training._check_trades_loss, ("robustlab.train",)),
    "gradreg_loss": (gradreg._check_gradreg_loss, ("robustlab.train",)),
    "sample_counts": (smoothing._check_sample_counts, ("robustlab.smoothing",)),
    "lower_confidence_bound": (smoothing._check_lower_confidence_bound, ("robustlab.smoothing",)),
    "certify": (smoothing._check_certify, ("robustlab.smoothing",)),
    "certified_accuracy": (smoothing._check_certified_accuracy, ("robustlab.smoothing",)),
    "average_certified_radius": (smoothing._check_average_certified_radius, ("robustlab.smoothing",)),
    "interval_bounds": (smoothing._check_interval_bounds, ("robustlab.bounds",)),
    "gradient": (saliency._check_gradient, ("robustlab.saliency",)),
    "smoothgrad": (saliency._check_smoothgrad, ("robustlab.saliency",)),
    "integrated_gradients": (saliency._check_integrated_gradients, ("robustlab.saliency",)),
    "mask_top": (interpretability._check_mask_top, ("robustlab.interpret",)),
    "linear_impute": (interpretability._check_linear_impute, ("robustlab.interpret",)),
    "road_morf": (interpretability._check_road_morf, ("robustlab.interpret",)),
}


def _seed(item: str) -> int:
    return sum(map(ord, item))


def _item(item: str) -> tuple[Callable[[Runner, bool], int], tuple[str, ...]]:
    if item not in ITEMS:
        raise ValueError(f"item must be one of {sorted(ITEMS)}, got {item!r}")
    return ITEMS[item]


@contextlib.contextmanager
def _checking(item: str):
    """The global generator restored afterwards; warnings shown on stdout, never scored."""
    state = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            torch.set_rng_state(state)
            for note in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
                print(f"{item}: note, a warning was raised (it costs nothing): {note}")


def check(item: str, func: Callable, *, hidden: bool = False, quiet: bool = False) -> None:
    """Checks a student's implementation of ``item`` against the reference, in this process.

    This is the quick check of the exercises' visible test cells while a student works; grades
    come from :func:`grade`, which runs the student's code outside their kernel.

    Args:
        item: one of :data:`ITEMS` (e.g. ``"fgsm"``).
        func: the student's function.
        hidden: also run the randomised and edge cases of the hidden tests.
        quiet: do not print the success line.

    Returns nothing (a number as the last value of a test cell would be read by nbgrader as
    partial credit); the success line says how many cases were checked.

    Raises:
        Feedback: with a message saying what is wrong and how to fix it.
    """
    checker, forbidden = _item(item)
    if not callable(func):
        raise Feedback(f"{item}: expected your function, got {type(func).__name__} {func!r}")
    module = getattr(func, "__module__", "") or ""
    if module == "robustlab" or module.startswith("robustlab.") or module.split(".")[0] in PEER_PACKAGES:
        raise Feedback(f"{item}: `{getattr(func, '__qualname__', func)}` is {module}'s own function, not yours. "
                       "Write the algorithm yourself: this item scores 0.")
    with _checking(item):
        cases = checker(LocalRunner(item, func, forbidden, seed=_seed(item)), hidden)
    if not quiet:
        print(f"{item}: {cases} {'hidden' if hidden else 'visible'} case(s) passed")


@dataclasses.dataclass
class Result:
    """The outcome of grading one item: passed or not, and the message for the student."""

    item: str
    passed: bool
    message: str


def grade(item: str, function: str, cells: Iterable[tuple[str, str]], *, hidden: bool = True,
          closed: Iterable[str] = ()) -> Result:
    """Grades ``item`` outside this process: the ``cells`` ((label, source) pairs: the
    notebook's read-only setup cells and the student's solution cells) run in a walled worker
    (:mod:`robustlab.grading.remote`), which must define ``function``; the checks run here.

    Args:
        item: one of :data:`ITEMS`.
        function: the name of the student's function in the cells.
        cells: the code to run first, in notebook order.
        hidden: run the hidden cases too (as the autograder does).
        closed: paths the student's code may not open (the instructor's files).
    """
    from .remote import RemoteRunner, Worker, WorkerError

    checker, forbidden = _item(item)
    try:
        worker = Worker(function, list(cells), forbidden, closed)
    except WorkerError as error:  # the cells crashed or ended the interpreter: this item only
        return Result(item, False, f"{item}: the grading process stopped while running your cells, before "
                                   f"`{function}` could be called ({str(error)[-300:].strip()})")
    with worker:
        if not worker.ready:
            why = f"your cells do not define `{function}`"
            errors = "; ".join(worker.cell_errors[:3])
            return Result(item, False, f"{item}: {why}" + (f" (errors: {errors})" if errors else ""))
        try:
            with _checking(item):
                cases = checker(RemoteRunner(item, worker, seed=_seed(item)), hidden)
        except Feedback as feedback:
            return Result(item, False, str(feedback))
    return Result(item, True, f"{item}: {cases} {'hidden' if hidden else 'visible'} case(s) passed")
