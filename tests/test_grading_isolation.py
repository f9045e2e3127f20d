"""Grading outside the student's kernel (robustlab.grading.remote, worker, sandbox): correct code
written differently passes every item there; each gaming attempt of the threat model's classes
scores 0 with a message; harmless output and warnings cost nothing; and the walls hold without
breaking the libraries a solution uses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robustlab import grading
from robustlab.grading import notebook
from robustlab.grading.remote import protected_paths

from .exercise_variants import ALTERNATIVE, GAMING, PRELUDE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def cells(code: str) -> list[tuple[str, str]]:
    return [("imports", PRELUDE), ("solution", code)]


def all_correct() -> str:
    return "\n".join(ALTERNATIVE.values())


@pytest.mark.parametrize("item", sorted(grading.ITEMS))
def test_correct_code_written_differently_passes_outside_the_kernel(item):
    result = grading.grade(item, item, cells(all_correct()), hidden=True, closed=protected_paths(ROOT))
    assert result.passed, result.message
    assert result.message.startswith(f"{item}: ") and "hidden case(s) passed" in result.message


@pytest.mark.parametrize("kind,what,item,code,says", GAMING, ids=[f"{g[0]}: {g[1]}" for g in GAMING])
def test_gaming_attempts_score_zero(kind, what, item, code, says):
    code = code.replace("{root}", str(ROOT)).replace("{{", "{").replace("}}", "}")
    # The attempt comes after every correct function but its own item's.
    others = "\n".join(src for name, src in ALTERNATIVE.items() if name != item)
    result = grading.grade(item, item, cells(others + "\n" + code), hidden=True, closed=protected_paths(ROOT))
    assert not result.passed, f"{what}: {result.message}"
    # ... and for the reason the attempt meets, not by accident (a typo in the attempt, say).
    assert result.message.startswith(f"{item}: ") and says in result.message, result.message


def test_delegation_and_walls_say_what_happened():
    delegating = cells(all_correct() + textwrap.dedent('''
        def pgd_linf_step(x_adv, x, grad, alpha, eps):
            return robustlab.attacks.pgd_step(x_adv, x, grad, alpha=alpha, eps=eps)
        '''))
    result = grading.grade("pgd_linf_step", "pgd_linf_step", delegating, hidden=False)
    assert "robustlab.attacks._geometry.pgd_step" in result.message and "scores 0" in result.message
    spawning = cells(all_correct() + textwrap.dedent('''
        import os
        def pgd_linf_step(x_adv, x, grad, alpha, eps):
            os.system("true")
            return x_adv
        '''))
    result = grading.grade("pgd_linf_step", "pgd_linf_step", spawning, hidden=False)
    assert "starting another process" in result.message, result.message


def test_stderr_logging_and_warnings_cost_nothing():
    noisy = cells(all_correct() + textwrap.dedent('''
        import logging, sys, warnings
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        _correct = pgd_linf_step
        def pgd_linf_step(x_adv, x, grad, alpha, eps):
            logging.getLogger("student").info("stepping")
            print("debug", file=sys.stderr)
            warnings.warn("a harmless warning")
            return _correct(x_adv, x, grad, alpha, eps)
        '''))
    assert grading.grade("pgd_linf_step", "pgd_linf_step", noisy).passed


def test_an_infinite_loop_costs_its_item_within_the_budget(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_GRADING_TIME_LIMIT", "2")
    looping = cells(all_correct() + "\ndef lower_confidence_bound(k, n, alpha):\n    while True:\n        pass\n")
    result = grading.grade("lower_confidence_bound", "lower_confidence_bound", looping, hidden=False)
    assert "did not return within its budget of 2 s of CPU time" in result.message
    # Catching the budget's exception does not help: the operating system's limit and the
    # checker's wall clock stop the worker.
    stubborn = cells(all_correct() + textwrap.dedent('''
        def lower_confidence_bound(k, n, alpha):
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
        '''))
    monkeypatch.setattr("robustlab.grading.remote.Worker.call",
                        _short_wall(monkeypatch))
    result = grading.grade("lower_confidence_bound", "lower_confidence_bound", stubborn, hidden=False)
    assert not result.passed and "did not return" in result.message


def _short_wall(monkeypatch):
    """Worker.call with a 5 s wall clock (instead of 3 x budget + 30 s), for the test's speed."""
    from robustlab.grading.remote import Worker

    original = Worker.call

    def call(self, args, kwargs, *, seed, budget, backward):
        receive = self._receive
        self._receive = lambda wall: receive(5.0)
        try:
            return original(self, args, kwargs, seed=seed, budget=budget, backward=backward)
        finally:
            self._receive = receive
    return call


def test_a_cell_that_does_not_define_the_function_is_named():
    result = grading.grade("fgsm", "fgsm", cells("raise ValueError('oops')"), hidden=False)
    assert not result.passed and "do not define `fgsm`" in result.message and "ValueError: oops" in result.message


def test_the_notebook_reader_finds_cells_and_checks():
    import nbformat

    nb = nbformat.read(ROOT / "solutions" / "training" / "training.ipynb", as_version=4)
    labels = [label for label, _ in notebook.code_cells(nb)]
    # The showcase cell (a training run that only plots the student's results) is not run.
    assert labels == ["imports", "pgd_at_epoch", "evaluate", "fgsm_rs_epoch", "trades_loss"]
    assert [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if notebook.is_showcase(c)] == ["showcase_overfitting"]
    tests = [c for c in nb.cells if notebook.is_test_cell(c)]
    assert notebook.checks_in(tests[0].source) == [("pgd_at_epoch", "pgd_at_epoch", False),
                                                   ("pgd_at_epoch", "pgd_at_epoch", True)]
    assert notebook.checks_in("grading.check('no_such_item', f)\nsyntax error here(") == []


def test_the_worker_starts_clean():
    """The worker is a fresh interpreter (isolated mode: no current folder on the path, no user
    site) with a bare environment, in a new folder of its own (checked as a student's cell sees it)."""
    probe = cells(textwrap.dedent('''
        import os, sys
        def fgsm(model, x, y, eps):
            raise RuntimeError(repr((os.getcwd(), os.listdir("."), sorted(k for k in os.environ if k.startswith("PY")),
                                     sys.flags.isolated)))
        '''))
    message = grading.grade("fgsm", "fgsm", probe, hidden=False).message
    # Its folder holds only what the worker itself writes (its output, caches); the one PYTHON*
    # variable is the hash seed the grader sets for determinism.
    folder = message[message.index("(") + 1:message.index("]") + 1]
    assert "robustlab-grading-" in folder and "'output.txt'" in folder and ".ipynb" not in folder, message
    assert message.endswith("['PYTHONHASHSEED'], 1)"), message


def test_protected_paths_close_the_instructor_files():
    # The walls close the course's instructor files; the reader never sends them to the worker.
    closed = protected_paths(ROOT)
    assert str(ROOT / "solutions") in closed and str(ROOT / "gradebook.db") in closed
    assert protected_paths(None) == []


def test_the_worker_exits_quietly_when_the_checker_sends_nothing():
    import os

    read_end, write_end = os.pipe()
    done = subprocess.run([sys.executable, "-I", "-m", "robustlab.grading.worker", str(write_end)],
                          input=b"", pass_fds=(write_end,), capture_output=True, timeout=120)
    os.close(write_end)
    os.close(read_end)
    assert done.returncode == 0 and done.stderr == b"", done.stderr[-500:]


def test_a_cell_that_never_ends_costs_only_what_it_defines(monkeypatch):
    monkeypatch.setattr("robustlab.grading.remote.CELL_BUDGET", 3.0)
    hanging = [("imports", PRELUDE), ("lower_confidence_bound", ALTERNATIVE["lower_confidence_bound"]),
               ("sample_counts", "while True:\n    pass\n")]
    assert grading.grade("lower_confidence_bound", "lower_confidence_bound", hanging).passed
    result = grading.grade("sample_counts", "sample_counts", hanging)
    assert not result.passed and "did not finish within 3 s of CPU time" in result.message, result.message


def test_cells_that_end_the_interpreter_cost_only_their_item():
    ending = cells(all_correct() + "\nimport os\nos._exit(3)\n")
    result = grading.grade("fgsm", "fgsm", ending, hidden=False)
    assert not result.passed and "the grading process stopped while running your cells" in result.message


def test_plotting_in_a_cell_is_harmless():
    plotting = cells(all_correct() + "\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()\n")
    assert grading.grade("fgsm", "fgsm", plotting, hidden=False).passed
