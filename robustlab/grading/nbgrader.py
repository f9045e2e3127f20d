"""nbgrader's autograde, with the checks taken out of the student's kernel.

``nbgrader_config.py`` sets ``c.Autograde.autograde_preprocessors = autograde_preprocessors()``:
:class:`HideChecks` blanks every test cell that calls ``grading.check`` before nbgrader executes
the notebook in the student's kernel (so nothing in that kernel can touch the checks), and
:class:`GradeOutsideKernel`, after the execution, puts the cells' source back, grades them with
:func:`robustlab.grading.notebook.grade_notebook` (a walled worker per item) and writes the
outcome as the cells' only output: a stream for a pass, an error for a failure. nbgrader's
``SaveAutoGrades`` then scores the cells from those outputs, as usual. The showcase cells (locked,
ungraded, which plot the student's results) are not run while autograding. Nothing the student's code
writes to stderr, and no error in the student's own cells, reaches a test cell's output.
"""

from __future__ import annotations

import os

from nbformat.v4 import new_output

from .notebook import checks_in, grade_notebook, is_showcase, is_test_cell
from .remote import protected_paths

__all__ = ["HideChecks", "GradeOutsideKernel", "ForgetUnknownCells", "autograde_preprocessors",
           "sanitize_preprocessors", "is_showcase"]

_KEY = "robustlab_grading"
_PLACEHOLDER = "# This test cell is graded outside the notebook's kernel by robustlab.grading.\n"
_SHOWCASE = "# This cell only draws your results (not graded); it is not run while the notebook is autograded.\n"

try:  # nbgrader is an optional dependency (the "grading" extra)
    from nbgrader.preprocessors import NbGraderPreprocessor as _Base
except ImportError:  # pragma: no cover - only without nbgrader installed
    from nbconvert.preprocessors import Preprocessor as _Base


def _graded(cell) -> bool:
    return is_test_cell(cell) and bool(checks_in(cell.get("source", "")))


class HideChecks(_Base):
    """Blanks the test cells that call ``grading.check`` (their source is kept in metadata), and
    the showcase cells: they score nothing, and a student's function that hangs or crashes would
    only cost the grader the cell's timeout."""

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            if _graded(cell) or (cell.get("cell_type") == "code" and is_showcase(cell)):
                cell.metadata[_KEY] = {"source": cell.source}
                cell.source = _PLACEHOLDER if _graded(cell) else _SHOWCASE
        return nb, resources


class GradeOutsideKernel(_Base):
    """Restores the hidden test cells and grades them outside the kernel (see the module)."""

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            stash = cell.metadata.pop(_KEY, None)
            if stash is not None:
                cell.source = stash["source"]
        root = getattr(getattr(self.config, "CourseDirectory", None), "root", None) or os.getcwd()
        results = grade_notebook(nb, closed=protected_paths(root))
        for index, outcome in results.items():
            cell = nb.cells[index]
            passed = [r for r in outcome if r.passed]
            failed = [r for r in outcome if not r.passed]
            outputs = []
            if passed:
                outputs.append(new_output("stream", name="stdout", text="".join(r.message + "\n" for r in passed)))
            if failed:
                message = "\n".join(r.message for r in failed)
                outputs.append(new_output("error", ename="Feedback", evalue=message, traceback=[message]))
            cell.outputs = outputs
            cell.execution_count = None
        return nb, resources


class ForgetUnknownCells(_Base):
    """Turns a cell whose nbgrader id the gradebook does not know (a student renamed or invented
    it), or a copy nbgrader's ``DeduplicateIds`` emptied, into an ordinary cell of the student's,
    instead of letting nbgrader fail the notebook."""

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook, MissingEntry

        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gradebook:
            try:
                known = {cell.name for cell in gradebook.find_notebook(info["notebook"],
                                                                       info["assignment"]).source_cells}
            except MissingEntry:
                return nb, resources
        for cell in nb.cells:
            if "nbgrader" not in cell.get("metadata", {}):
                continue
            grade_id = cell.metadata["nbgrader"].get("grade_id")
            if grade_id is None:  # what DeduplicateIds leaves of a copy ({}), which OverwriteCells cannot read
                del cell.metadata["nbgrader"]
            elif grade_id not in known:
                self.log.warning("Cell '%s' is not in the gradebook: graded as the student's own cell", grade_id)
                del cell.metadata["nbgrader"]
        return nb, resources


def sanitize_preprocessors() -> list:
    """nbgrader's sanitize preprocessors with :class:`ForgetUnknownCells` before ``OverwriteCells``."""
    from nbgrader.converters import Autograde

    default = list(Autograde.class_traits()["sanitize_preprocessors"].default())
    at = next(i for i, pp in enumerate(default) if pp.__name__ == "OverwriteCells")
    return default[:at] + [ForgetUnknownCells] + default[at:]


def autograde_preprocessors() -> list:
    """nbgrader's autograde preprocessors with the two of this module around ``Execute``."""
    from nbgrader.converters import Autograde

    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    at = next(i for i, pp in enumerate(default) if pp.__name__ == "Execute")
    return default[:at] + [HideChecks, default[at], GradeOutsideKernel] + default[at + 1:]
