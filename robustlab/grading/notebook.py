"""Reading an nbgrader notebook for grading outside the kernel: the code to run (the read-only
setup cells and the student's solution cells, by their nbgrader metadata) and the checks each
test cell makes (read from its source, as restored by nbgrader, never run)."""

from __future__ import annotations

import ast
from typing import Iterable

from .items import ITEMS, Result, grade

__all__ = ["code_cells", "checks_in", "grade_notebook", "is_showcase"]


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_test_cell(cell) -> bool:
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_showcase(cell) -> bool:
    """A locked, ungraded code cell whose nbgrader id starts with ``showcase``: it plots what the
    student built (a robustness curve, a training run) and scores nothing, so neither the worker
    nor the autograded kernel runs it."""
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("locked")) and not meta.get("grade") \
        and str(meta.get("grade_id", "")).startswith("showcase")


def _runnable(source: str) -> str:
    """The source without IPython's magics and shell escapes (the worker is plain Python)."""
    if source.lstrip().startswith("%%"):
        return ""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def code_cells(nb) -> list[tuple[str, str]]:
    """(label, source) of the cells a worker runs, in order: the locked setup cells and every
    solution cell. The student's other cells (experiments, plots), the showcase cells and the test
    cells are left out."""
    cells = []
    for index, cell in enumerate(nb.get("cells", [])):
        meta = _nbgrader(cell)
        if cell.get("cell_type") != "code" or is_test_cell(cell) or is_showcase(cell):
            continue
        if meta.get("solution") or meta.get("locked"):
            cells.append((str(meta.get("grade_id", f"cell-{index}")), _runnable(cell.get("source", ""))))
    return cells


def checks_in(source: str) -> list[tuple[str, str, bool]]:
    """(item, function name, hidden) for every ``...check("item", function, hidden=...)`` call in
    a test cell's source (the hidden ones included)."""
    try:
        tree = ast.parse(_runnable(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name != "check" or len(node.args) < 2:
            continue
        item, function = node.args[0], node.args[1]
        if not (isinstance(item, ast.Constant) and item.value in ITEMS and isinstance(function, ast.Name)):
            continue
        hidden = any(k.arg == "hidden" and isinstance(k.value, ast.Constant) and bool(k.value.value)
                     for k in node.keywords)
        found.append((item.value, function.id, hidden))
    return found


def grade_notebook(nb, *, closed: Iterable[str] = ()) -> dict[int, list[Result]]:
    """Grades every test cell of ``nb`` outside this process: cell index -> one result per
    item the cell checks (an item checked twice, visibly and hidden, is graded once, hidden)."""
    cells = code_cells(nb)
    results: dict[int, list[Result]] = {}
    for index, cell in enumerate(nb.get("cells", [])):
        if not is_test_cell(cell):
            continue
        wanted: dict[tuple[str, str], bool] = {}
        for item, function, hidden in checks_in(cell.get("source", "")):
            wanted[(item, function)] = wanted.get((item, function), False) or hidden
        if wanted:
            results[index] = [grade(item, function, cells, hidden=hidden, closed=closed)
                              for (item, function), hidden in wanted.items()]
    return results
