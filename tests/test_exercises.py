"""The nbgrader pipeline, run with the real ``nbgrader`` commands in a temporary course folder:
the committed exercises are exactly what ``generate_assignment`` makes of the solutions; the
solutions and correct code written differently autograde to full marks; the unmodified
exercises to zero; typical mistakes and handing in the reference lose exactly their item's
points, with the feedback in the graded notebook; deleted and edited test cells are restored;
an infinite loop costs only its item; a warning costs nothing; grading twice gives the same
scores; and the instructor's feedback and export commands work."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .exercise_variants import ALTERNATIVE, DELEGATING, WRONG

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
pytestmark = pytest.mark.slow


def nbgrader(course: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Runs ``nbgrader`` from the course folder, with this interpreter's scripts (alembic) on PATH."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    env["ROBUSTLAB_GRADING_TIME_LIMIT"] = "5"  # the infinite-loop submissions need not wait 10 s
    env["ROBUSTLAB_GRADING_CELL_BUDGET"] = "10"  # nor a cell that never ends 60 s
    result = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=course, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def items_of(nb) -> list[str]:
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]


def solution_code(cell_source: str) -> str:
    """The code of a source cell without nbgrader's solution markers."""
    return "\n".join(line for line in cell_source.splitlines()
                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course folder with this repository's config and solutions, assignments generated."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for assignment in ASSIGNMENTS:
        nbgrader(course, "generate_assignment", assignment, "--force")
    return course


def release(course: Path, assignment: str):
    return nbformat.read(course / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)


def source(assignment: str):
    return nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def solution(assignment: str) -> dict[str, str]:
    """grade_id -> the solution's code, for every solution cell of the assignment."""
    return {c.metadata["nbgrader"]["grade_id"]: solution_code(c.source) for c in source(assignment).cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def submit(course: Path, student: str, assignment: str, code: dict[str, str], edit=None) -> None:
    """Hands in the released notebook with the solution cells replaced by ``code`` (grade_id ->
    source; cells not named stay as released), after ``edit(nb)`` if given."""
    nb = release(course, assignment)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in code:
            cell.source = code[grade_id]
    if edit is not None:
        edit(nb)
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{assignment}.ipynb")


def scores(course: Path, assignment: str) -> dict[str, dict[str, float]]:
    """student -> {item: score} from the gradebook."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for sub in gb.assignment_submissions(assignment):
            nb = gb.find_submission_notebook(assignment, assignment, sub.student_id)
            out[sub.student_id] = {g.name.removeprefix("test_"): g.score for g in nb.grades
                                   if g.name not in written_answers(assignment)}
    return out


def max_scores(assignment: str) -> dict[str, float]:
    """item -> points of every autograded test cell (the written answers are graded by hand)."""
    return {c.metadata["nbgrader"]["grade_id"].removeprefix("test_"): float(c.metadata["nbgrader"]["points"])
            for c in source(assignment).cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}


def written_answers(assignment: str) -> dict[str, float]:
    """grade_id -> points of the manually graded answer cells."""
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
            for c in source(assignment).cells
            if c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("solution")}


def graded_output(course: Path, student: str, assignment: str, item: str) -> str:
    nb = nbformat.read(course / "autograded" / student / assignment / f"{assignment}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == f"test_{item}":
            return "\n".join(o.get("evalue", "") + o.get("text", "") for o in cell.outputs)
    raise AssertionError(f"no test cell for {item}")


# Items whose exercise tells students to build on another of their functions: a mistake in the
# latter may also cost the former (as it would for a student), so their scores are not asserted.
DEPENDS = {"gradient": ("smoothgrad", "integrated_gradients"), "sample_counts": ("certify",),
           "lower_confidence_bound": ("certify",), "pgd_linf_step": ("pgd_attack",), "pgd_l2_step": ("pgd_attack",),
           "linear_impute": ("road_morf",)}


def expected(full: dict[str, float], lost: str | set[str], got: dict[str, float]) -> dict[str, float]:
    """Full marks except 0 for the ``lost`` item(s); items depending on one keep whatever they got."""
    lost = {lost} if isinstance(lost, str) else set(lost)
    depending = {d for item in lost for d in DEPENDS.get(item, ())}
    return {item: 0.0 if item in lost else got.get(item) if item in depending else points
            for item, points in full.items()}


def pack(entries: list[tuple], item_at: int) -> list[dict[str, tuple]]:
    """Groups submissions into as few students as possible, each with at most one entry per item
    and no two items of which one builds on the other (so each student's scores stay readable):
    a student's notebook carries several independent mistakes, and nbgrader runs fewer notebooks."""
    students: list[dict[str, tuple]] = []
    for entry in entries:
        item = entry[item_at]
        for student in students:
            related = any(item in DEPENDS.get(other, ()) or other in DEPENDS.get(item, ()) for other in student)
            if item not in student and not related:
                student[item] = entry
                break
        else:
            students.append({item: entry})
    return students


def test_committed_exercises_are_what_nbgrader_generates(course):
    for assignment in ASSIGNMENTS:
        generated = json.loads((course / "exercises" / assignment / f"{assignment}.ipynb").read_text())
        committed = json.loads((ROOT / "exercises" / assignment / f"{assignment}.ipynb").read_text())
        assert generated == committed, f"exercises/{assignment} is out of date: run `make exercises`"
    assert sorted(p.name for p in (ROOT / "exercises").iterdir() if p.is_dir()) == ASSIGNMENTS


def test_the_assignments_cover_every_graded_item():
    from robustlab import grading

    assert len(ASSIGNMENTS) >= 6
    items = [item for a in ASSIGNMENTS for item in items_of(source(a))]
    assert sorted(items) == sorted(grading.ITEMS)
    for a in ASSIGNMENTS:
        released = (ROOT / "exercises" / a / f"{a}.ipynb").read_text()
        assert "BEGIN HIDDEN TESTS" not in released and "hidden=True" not in released
        assert "### BEGIN SOLUTION" not in released and "raise NotImplementedError()" in released
        assert "Rubric" not in released and "Model answer" not in released  # the written answers' keys


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_autograding(course, assignment):
    """One autograde run per assignment over many 'students': the solution, the blank exercise,
    correct code written differently, and each typical mistake and way of delegating."""
    items = items_of(source(assignment))
    solved = solution(assignment)
    submit(course, "solution", assignment, solved)
    submit(course, "blank", assignment, {})
    # The alternative student's first function also prints a harmless warning: it must not cost points.
    alternative = {item: ALTERNATIVE[item] for item in items}
    alternative[items[0]] = "import warnings\nwarnings.warn('a harmless warning', UserWarning)\n" + \
        alternative[items[0]].replace('):\n', '):\n    warnings.warn("a harmless warning", UserWarning)\n', 1)
    submit(course, "alternative", assignment, alternative)
    wrong = [(item, what, code, fragment) for item, what, code, fragment in WRONG if item in items]
    assert len(wrong) >= 3, f"{assignment}: at least three typical mistakes must be graded"
    wrong_students = pack(wrong, 0)
    for s, student in enumerate(wrong_students):
        submit(course, f"wrong{s}", assignment, {**solved, **{item: e[2] for item, e in student.items()}})
    delegating = [(what, item, code) for what, item, code in DELEGATING if item in items]
    delegating_students = pack(delegating, 1)
    for s, student in enumerate(delegating_students):
        submit(course, f"delegating{s}", assignment, {**solved, **{item: e[2] for item, e in student.items()}})
    first, last = items[0], items[-1]

    def tamper(nb):  # delete the first item's test cell, gut the last one's
        tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
        nb.cells.remove(tests[0])
        tests[-1].source = "pass  # the test was here"
    submit(course, "tampered", assignment, {**solved, first: "def %s(*args, **kwargs):\n    return None" % first},
           edit=tamper)
    submit(course, "loops", assignment, {**solved, last: solved[last].replace(
        '"""\n', '"""\n    while True:\n        pass\n', 1)})

    nbgrader(course, "autograde", assignment, "--force")
    got = scores(course, assignment)
    full = max_scores(assignment)
    assert got["solution"] == full
    assert got["alternative"] == full, "correct code, written differently and printing warnings, keeps every point"
    assert got["blank"] == {item: 0.0 for item in full}
    for s, student in enumerate(wrong_students):
        whats = [e[1] for e in student.values()]
        assert got[f"wrong{s}"] == expected(full, set(student), got[f"wrong{s}"]), f"{whats}: {got[f'wrong{s}']}"
        for item, (_, what, _, fragment) in student.items():
            assert fragment in graded_output(course, f"wrong{s}", assignment, item), what
    for s, student in enumerate(delegating_students):
        whats = [e[0] for e in student.values()]
        assert got[f"delegating{s}"] == expected(full, set(student), got[f"delegating{s}"]), \
            f"{whats}: {got[f'delegating{s}']}"
        for item, (what, _, _) in student.items():
            assert "scores 0" in graded_output(course, f"delegating{s}", assignment, item), what
    # The cells that only plot the student's results were not run (a hanging function there
    # would cost the grader the cell's timeout), and their source is the instructor's.
    from robustlab.grading.nbgrader import is_showcase

    graded_nb = nbformat.read(course / "autograded" / "solution" / assignment / f"{assignment}.ipynb", as_version=4)
    showcases = {c.metadata["nbgrader"]["grade_id"]: c for c in graded_nb.cells if is_showcase(c)}
    originals = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source(assignment).cells if is_showcase(c)}
    assert showcases.keys() == originals.keys()
    for grade_id, cell in showcases.items():
        assert cell.outputs == [] and cell.source == originals[grade_id], grade_id
    # The deleted and the gutted test cells were put back, so the fake first item fails and the
    # last one (correct) passes.
    assert got["tampered"] == expected(full, first, got["tampered"])
    assert got["loops"] == expected(full, last, got["loops"])
    assert "did not return within its budget of 5 s" in graded_output(course, "loops", assignment, last)

    # Written answers are left to the instructor: autograding marks them for manual grading.
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for answer in written_answers(assignment):
            assert gb.find_grade(answer, assignment, assignment, "solution").needs_manual_grade, answer

    # Grading the same submissions again gives the same scores (checked where sampling is part of
    # the algorithm, the one place a score could wobble; two students, each run costs half a minute).
    if assignment == "smoothing":
        for student in ("solution", "alternative"):
            nbgrader(course, "autograde", assignment, "--student", student, "--force")
            assert scores(course, assignment)[student] == got[student]


def test_a_cell_that_never_ends_costs_only_its_item(course):
    """nbgrader's per-cell timeout is the backstop for a loop outside any graded call."""
    submit(course, "hangs", "smoothing", {**solution("smoothing"), "sample_counts": "while True:\n    pass\n"})
    nbgrader(course, "autograde", "smoothing", "--student", "hangs", "--force", "--Execute.timeout=15")
    got = scores(course, "smoothing")["hangs"]
    # sample_counts was never defined, and certify builds on it; the bound is unaffected.
    assert got == {**max_scores("smoothing"), "sample_counts": 0.0, "certify": 0.0}


def test_instructor_feedback_and_export(course):
    """After autograding: feedback files for the students, and a grades CSV."""
    submit(course, "carol", "gradreg", solution("gradreg"))
    submit(course, "dave", "gradreg", {"gradreg_loss": WRONG[[w[1] for w in WRONG].index(
        "gradient of the mean loss")][2]})
    nbgrader(course, "autograde", "gradreg", "--student", "carol", "--force")
    nbgrader(course, "autograde", "gradreg", "--student", "dave", "--force")
    nbgrader(course, "generate_feedback", "gradreg", "--force")
    feedback = (course / "feedback" / "dave" / "gradreg" / "gradreg.html").read_text()
    assert "1/N^2" in feedback and re.search(r"Score:\s*0(\.0)?\s*/\s*3", feedback)
    nbgrader(course, "export", "--to", str(course / "grades.csv"))
    rows = (course / "grades.csv").read_text().splitlines()
    header = rows[0].split(",")
    table = {r.split(",")[header.index("student_id")]: r.split(",") for r in rows[1:]
             if r.split(",")[header.index("assignment")] == "gradreg"}
    assert float(table["carol"][header.index("score")]) == 3.0
    assert float(table["dave"][header.index("score")]) == 0.0


def test_make_autograde_grades_every_submission_and_lists_the_failures(tmp_path):
    """Copied and renamed cells never make a notebook fail; a notebook nbgrader cannot read does
    not stop the others, and `make autograde` names it."""
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / "gradreg", course / "solutions" / "gradreg")
    nbgrader(course, "generate_assignment", "gradreg", "--force")
    solved = solution("gradreg")
    submit(course, "tidy", "gradreg", solved)

    def copy_and_rename(nb):
        test = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
        answer = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution"))
        nb.cells.insert(nb.cells.index(test) + 1, nbformat.from_dict(json.loads(json.dumps(test))))
        nb.cells.insert(nb.cells.index(answer) + 1, nbformat.from_dict(json.loads(json.dumps(answer))))
        renamed = nbformat.from_dict(json.loads(json.dumps(answer)))
        renamed.metadata["nbgrader"]["grade_id"] = "my_own_cell"
        nb.cells.append(renamed)
    submit(course, "copies", "gradreg", solved, edit=copy_and_rename)
    broken = course / "submitted" / "broken" / "gradreg"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "gradreg.ipynb").write_text('{"cells": [ this is not a notebook')

    done = subprocess.run(["make", "-s", "-C", str(ROOT), "autograde", f"COURSE={course}", "ASSIGNMENTS=gradreg",
                           f"VENV={Path(sys.executable).parents[1]}"], capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, ROBUSTLAB_GRADING_TIME_LIMIT="5", ROBUSTLAB_GRADING_CELL_BUDGET="10"))
    assert done.returncode != 0, done.stdout + done.stderr
    assert "not graded" in done.stdout and "'broken'" in done.stdout, done.stdout + done.stderr
    got = scores(course, "gradreg")
    assert got["tidy"] == max_scores("gradreg") and got["copies"] == max_scores("gradreg"), got


def test_two_autogrades_at_once_still_give_the_solution_full_marks(tmp_path):
    """Grading on a busy machine: CPU-time budgets, not wall-clock ones, so two autogrades running
    side by side (the solution of the assignment with the most work per call) both give full marks."""
    from concurrent.futures import ThreadPoolExecutor

    courses = []
    for name in ("first", "second"):
        course = tmp_path / name
        course.mkdir()
        shutil.copy(ROOT / "nbgrader_config.py", course)
        shutil.copytree(ROOT / "solutions" / "saliency", course / "solutions" / "saliency")
        nbgrader(course, "generate_assignment", "saliency", "--force")
        submit(course, "solution", "saliency", solution("saliency"))
        courses.append(course)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda course: nbgrader(course, "autograde", "saliency", "--force"), courses))
    for course in courses:
        got = scores(course, "saliency")["solution"]
        assert got == max_scores("saliency"), {item: graded_output(course, "solution", "saliency", item)
                                               for item, points in got.items() if points < max_scores("saliency")[item]}
