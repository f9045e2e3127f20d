"""Calling a student's function for a check: the common part of both runners, and the runner
that works inside the student's own kernel (for the visible checks while they work).

The in-kernel runner gives quick feedback and is not a defence: anything in a kernel can be
changed by the code that ran before it. Grades come from :mod:`robustlab.grading.remote`, which
runs the student's code in a separate, walled worker.

Both runners: seed the global generators before each call (the same submission grades the same
way), convert the result to plain values and backpropagate through it *inside* the time-limited
call, record what each model among the arguments received (:class:`calls.Observation`), and
give each call a CPU-time budget of ``max(TIME_LIMIT, BUDGET_FACTOR x the reference's CPU time
on the same inputs)`` when the check timed the reference with :meth:`Runner.reference`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn

from . import calls
from .feedback import Feedback
from .sandbox import PEER_PACKAGES

__all__ = ["Runner", "LocalRunner", "TIME_LIMIT", "BUDGET_FACTOR", "files_of"]

# The least CPU time, in seconds, one call of a student's function gets (instructors may change
# it with the environment variable ROBUSTLAB_GRADING_TIME_LIMIT), and the multiple of the
# reference's own CPU time on the same inputs it gets when that is more.
TIME_LIMIT = float(os.environ.get("ROBUSTLAB_GRADING_TIME_LIMIT", "10"))
BUDGET_FACTOR = 20.0


class Runner:
    """Calls the student's function for the checks of one item (see the module's docstring)."""

    def __init__(self, item: str, seed: int):
        self.item, self.seed = item, seed
        self.calls = 0
        self.last = calls.CallRecord()
        self._modules: list[nn.Module] = []
        self._cost: float | None = None

    def reference(self, func: Callable, *args, **kwargs) -> Any:
        """Runs the reference ``func`` here and times it: the next student call's budget is
        ``BUDGET_FACTOR`` times its CPU time (at least ``TIME_LIMIT``)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # timed as the worker runs the student's code: on one thread
        try:
            start = time.process_time()
            result = func(*args, **kwargs)
            self._cost = time.process_time() - start
        finally:
            torch.set_num_threads(threads)
        return result

    def budget(self) -> float:
        cost, self._cost = self._cost, None
        limit = float(os.environ.get("ROBUSTLAB_GRADING_TIME_LIMIT", TIME_LIMIT))
        return limit if cost is None else max(limit, BUDGET_FACTOR * cost)

    def observed(self, module: nn.Module) -> calls.Observation:
        """What ``module`` (an argument of the last call) received during that call."""
        for candidate, record in zip(self._modules, self.last.observations):
            if candidate is module:
                return record
        raise ValueError(f"{self.item}: the module was not an argument of the last call")

    def timeout(self, budget: float) -> Feedback:
        return Feedback(f"{self.item}: your function did not return within its budget of {budget:.0f} s of CPU "
                        "time (an infinite loop, or far more work than needed?)")

    def not_implemented(self) -> Feedback:
        return Feedback(f"{self.item}: not implemented yet (replace `raise NotImplementedError()` with your code)")

    def delegation(self, names: str) -> Feedback:
        return Feedback(f"{self.item}: your function calls {names}: the reference implementation (or a library "
                        "that implements it). Write the algorithm yourself: this item scores 0.")

    def __call__(self, *args, backward: bool = False, **kwargs):
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# In the student's kernel


def files_of(module_names: tuple[str, ...]) -> frozenset[str]:
    """The resolved source files of the modules; a package counts with every file in it."""
    files = set()
    for name in module_names:
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):  # a package: all of its modules, subpackages included
            for folder in module.__path__:
                for root, _, names in os.walk(folder):
                    files.update(os.path.realpath(os.path.join(root, f)) for f in names if f.endswith(".py"))
        else:
            files.add(os.path.realpath(module.__file__))
    return frozenset(files)


@functools.lru_cache(maxsize=None)
def _origin(filename: str) -> tuple[str, str | None]:
    """A code object's file, resolved, and the peer package it belongs to (if any)."""
    real = os.path.realpath(filename)
    parts = real.split(os.sep)
    for pkg in PEER_PACKAGES:
        if pkg in parts and "site-packages" in parts[:parts.index(pkg)]:
            return real, pkg
    return real, None


class _Delegation:
    """Records calls into forbidden files while active (a profile hook on this thread): the
    in-kernel runner's check, for feedback while working (the graded worker uses traps)."""

    def __init__(self, files: frozenset[str]):
        self.files = files
        self.seen: list[str] = []
        self.tampered = False

    def hook(self, frame, event, arg):
        if event == "call":
            real, peer = _origin(frame.f_code.co_filename)
            name = f"robustlab.{os.path.basename(real)[:-3]}.{frame.f_code.co_name}" if real in self.files else peer
            if name is not None and name not in self.seen:
                self.seen.append(name)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        previous = sys.getprofile()
        sys.setprofile(self.hook)
        try:
            yield
        finally:
            # Bound methods are created afresh on each access: compare with ==, not `is`.
            self.tampered = sys.getprofile() != self.hook
            sys.setprofile(previous)


class _CpuTimeout(BaseException):
    pass


@contextlib.contextmanager
def _cpu_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield  # signals only reach the main thread; nbgrader's per-cell timeout still applies
        return

    def on_alarm(signum, frame):
        raise _CpuTimeout()

    previous = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


class LocalRunner(Runner):
    """Calls the student's function in this process (the student's kernel)."""

    def __init__(self, item: str, func: Callable, forbidden: tuple[str, ...], seed: int):
        super().__init__(item, seed)
        self.func = func
        self.forbidden_files = files_of(forbidden)

    def __call__(self, *args, backward: bool = False, **kwargs):
        self.calls += 1
        budget = self.budget()
        self._modules = calls.modules_in((args, kwargs))
        record = calls.CallRecord()
        monitor = _Delegation(self.forbidden_files)
        start = time.process_time()
        try:
            with calls.seeded(self.seed + self.calls), calls.observe(self._modules) as observations, \
                    _cpu_limit(budget), monitor.active():
                raw = self.func(*args, **kwargs)
                if backward:
                    record.requires_grad, record.backward_error = calls.backward(raw, self._modules)
                result = calls.plain(raw)
        except _CpuTimeout:
            raise self.timeout(budget) from None
        except Feedback:
            raise
        except NotImplementedError:
            raise self.not_implemented() from None
        except Exception as exc:
            if monitor.seen:
                raise self.delegation(", ".join(monitor.seen[:3])) from None
            raise Feedback(f"{self.item}: your function raised {type(exc).__name__}: {exc}") from exc
        record.observations, record.cpu_seconds = observations, time.process_time() - start
        self.last = record
        if monitor.tampered:
            raise Feedback(f"{self.item}: your function switched off the grader's call monitor (sys.setprofile): "
                           "this item scores 0.")
        if monitor.seen:
            raise self.delegation(", ".join(monitor.seen[:3]) + (" ..." if len(monitor.seen) > 3 else ""))
        return result
