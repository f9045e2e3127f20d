"""Benchmark: how long nbgrader takes to autograde each assignment's solution notebook.

For every assignment in solutions/, in a temporary course folder with this repository's
nbgrader_config.py: `nbgrader autograde` of (1) the solution notebook, (2) the unmodified
exercise (every function raises NotImplementedError at once, so its time is the floor of
kernel start, imports and nbgrader's own work), each repeated and timed as whole commands.

Printed per assignment: the median seconds of the solution, (a) its ratio to the 30 s budget
per notebook (target <= 1), and (b) its ratio to the floor, which is what the checks cost on
top of nbgrader itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 30.0


def run(course: Path, *args: str) -> float:
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=course, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("assignments", nargs="*", help="default: all of solutions/")
    args = parser.parse_args()
    names = args.assignments or sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    print(f"{'assignment':<18} {'solution s':>10} {'floor s':>8} {'(a) /30 s':>10} {'(b) /floor':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copy(ROOT / "nbgrader_config.py", course)
        shutil.copytree(ROOT / "solutions", course / "solutions")
        for name in names:
            run(course, "generate_assignment", name, "--force")
            for student, folder in (("solution", "solutions"), ("floor", "exercises")):
                target = course / "submitted" / student / name
                target.mkdir(parents=True, exist_ok=True)
                nb = nbformat.read(course / folder / name / f"{name}.ipynb", as_version=4)
                nbformat.write(nb, target / f"{name}.ipynb")
            times = {"solution": [], "floor": []}
            for rep in range(args.repeats):
                for student in (("solution", "floor") if rep % 2 == 0 else ("floor", "solution")):
                    times[student].append(run(course, "autograde", name, "--student", student, "--force"))
            sol, floor = statistics.median(times["solution"]), statistics.median(times["floor"])
            print(f"{name:<18} {sol:>10.2f} {floor:>8.2f} {sol / BUDGET_S:>10.2f} {sol / floor:>10.2f}")


if __name__ == "__main__":
    main()
