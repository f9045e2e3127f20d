"""nbgrader configuration of the course (run nbgrader commands from the repository root).

solutions/<assignment>/*.ipynb are the instructor's source notebooks; `nbgrader
generate_assignment <assignment>` writes the student versions to exercises/<assignment>/, which
are committed (tests/test_exercises.py keeps the two in sync). See the README's "Exercises"
section for the whole workflow.
"""

import os

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

# The course root is this folder, wherever nbgrader is started from.
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
# Only the notebooks go to students (no README, no checkpoints).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "README.md", "feedback"]

# The test cells are graded outside the student's kernel: robustlab.grading's preprocessors blank
# them before nbgrader runs the notebook and grade them afterwards in a walled worker process
# (see robustlab/grading/__init__.py and the book's exercises appendix for the threat model).
from robustlab.grading.nbgrader import autograde_preprocessors, sanitize_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = autograde_preprocessors()
# A cell whose nbgrader id a student renamed or invented counts as the student's own cell (nbgrader
# would otherwise fail the whole notebook); nbgrader itself de-duplicates copied cells.
c.Autograde.sanitize_preprocessors = sanitize_preprocessors()

# Every cell gets this many seconds; on a timeout the kernel is interrupted and grading goes on
# with the next cell, so an infinite loop in a student's own cell costs only what that cell
# defines (robustlab.grading gives each call of a student's function a CPU-time budget and says
# so in the feedback).
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True

# Test cells a student deleted are put back before grading; edited ones are overwritten from the
# gradebook (nbgrader's OverwriteCells does that for every locked cell).
c.OverwriteCells.add_missing_cells = True

# The released stub students replace.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
