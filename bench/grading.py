"""Benchmark: what grading costs, quiet and busy.

1. **Autograde times.** For every assignment in solutions/, in a temporary course folder with
   this repository's nbgrader_config.py (grading outside the kernel, in walled workers):
   `nbgrader autograde` of the solution notebook and of the unmodified exercise (every function
   raises NotImplementedError at once: the floor of kernel start, imports, workers and nbgrader's
   own work), each repeated and timed as whole commands. Then the same solution autograded
   **twice at once** (two course folders, so no shared gradebook): the busy time.
   Printed: median seconds, (a) the ratio to the 60 s budget per notebook (target <= 1, quiet
   and busy) and (b) the ratio to nbgrader's floor (what the checks cost on top of nbgrader).
2. **Monitoring overhead.** A student function that is a pure Python loop (the case a profile
   hook slows most), timed in this process with nothing attached, then as the grader runs it in
   the worker (traps and an audit hook, a CPU timer; the worker reports the call's CPU time).
   Printed: the ratio (target <= 2).

3. **Budget headroom.** Every item of every solution notebook graded here (hidden cases), with
   each call's CPU time in the worker and the budget it had: printed, per assignment, the largest
   share of a budget a correct solution used (target <= 0.25, i.e. 4x headroom, so a busy machine
   or a slower but reasonable student implementation still passes). Workers run on one thread,
   so CPU time does not grow with the load (idle OpenMP threads spinning would be billed).

Run with the machine otherwise idle for the quiet figures: `python bench/grading.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 60.0
OVERHEAD_TARGET = 2.0
HEADROOM_TARGET = 0.25


def nbgrader(course: Path, *args: str) -> float:
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=course, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def make_course(tmp: Path, names: list[str]) -> Path:
    course = tmp
    course.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for name in names:
        nbgrader(course, "generate_assignment", name, "--force")
        for student, folder in (("solution", "solutions"), ("floor", "exercises")):
            target = course / "submitted" / student / name
            target.mkdir(parents=True, exist_ok=True)
            nb = nbformat.read(course / folder / name / f"{name}.ipynb", as_version=4)
            nbformat.write(nb, target / f"{name}.ipynb")
    return course


def autograde_times(names: list[str], repeats: int) -> None:
    print(f"{'assignment':<16} {'solution s':>10} {'floor s':>8} {'busy s':>8} {'(a) quiet/60':>12} "
          f"{'(a) busy/60':>11} {'(b) /floor':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        first, second = make_course(Path(tmp) / "a", names), make_course(Path(tmp) / "b", names)
        for name in names:
            times: dict[str, list[float]] = {"solution": [], "floor": []}
            for rep in range(repeats):
                for student in (("solution", "floor") if rep % 2 == 0 else ("floor", "solution")):
                    times[student].append(nbgrader(first, "autograde", name, "--student", student, "--force"))
            busy = []
            for _ in range(repeats):
                with ThreadPoolExecutor(2) as pool:
                    jobs = [pool.submit(nbgrader, course, "autograde", name, "--student", "solution", "--force")
                            for course in (first, second)]
                    busy.append(max(job.result() for job in jobs))
            sol, floor, hot = (statistics.median(v) for v in (times["solution"], times["floor"], busy))
            print(f"{name:<16} {sol:>10.1f} {floor:>8.1f} {hot:>8.1f} {sol / BUDGET_S:>12.2f} {hot / BUDGET_S:>11.2f} "
                  f"{sol / floor:>10.2f}", flush=True)


LOOP = textwrap.dedent('''
    def lower_confidence_bound(k, n, alpha):
        total = 0
        for i in range(20_000_000):
            total += i % 7
        return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1)) + 0 * total
    ''')


def monitoring_overhead(repeats: int) -> None:
    from robustlab.grading.items import _item
    from robustlab.grading.remote import RemoteRunner, Worker
    from robustlab.grading.runners import LocalRunner

    namespace: dict = {}
    prelude = "import math\nfrom scipy.stats import beta\n"
    exec(prelude + LOOP, namespace)
    plain = []
    for _ in range(repeats):
        start = time.process_time()
        namespace["lower_confidence_bound"](7, 10, 0.05)
        plain.append(time.process_time() - start)
    _, forbidden = _item("lower_confidence_bound")
    graded = []
    with Worker("lower_confidence_bound", [("imports", prelude), ("solution", LOOP)], forbidden, []) as worker:
        run = RemoteRunner("lower_confidence_bound", worker, seed=0)
        for _ in range(repeats):
            run(7, 10, 0.05)
            graded.append(run.last.cpu_seconds)
    local = LocalRunner("lower_confidence_bound", namespace["lower_confidence_bound"], forbidden, seed=0)
    kernel = []
    for _ in range(repeats):
        local(7, 10, 0.05)
        kernel.append(local.last.cpu_seconds)
    a, b, c = statistics.median(plain), statistics.median(graded), statistics.median(kernel)
    print(f"monitoring overhead on a pure Python loop: {a:.2f} s of CPU plain; graded in the worker {b:.2f} s, "
          f"ratio {b / a:.2f} (target <= {OVERHEAD_TARGET:g}); the in-kernel check (a profile hook, feedback "
          f"only) {c:.2f} s, ratio {c / a:.2f}")


def budget_headroom(names: list[str]) -> None:
    from robustlab.grading import remote
    from robustlab.grading.notebook import grade_notebook

    used: list[tuple[float, float]] = []
    call = remote.RemoteRunner.__call__

    def timed(self, *args, **kwargs):
        budgets: list[float] = []
        budget = self.budget
        self.budget = lambda: budgets.append(budget()) or budgets[-1]  # note the budget the call gets
        try:
            return call(self, *args, **kwargs)
        finally:
            del self.budget
            if budgets:
                used.append((self.last.cpu_seconds, budgets[0]))

    print(f"{'assignment':<16} {'calls':>6} {'worst s':>8} {'of budget s':>11} {'share':>6} (target <= "
          f"{HEADROOM_TARGET:g})")
    remote.RemoteRunner.__call__ = timed
    try:
        for name in names:
            used.clear()
            nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
            failed = [r.message for results in grade_notebook(nb).values() for r in results if not r.passed]
            seconds, budget = max(used, key=lambda pair: pair[0] / pair[1])
            print(f"{name:<16} {len(used):>6} {seconds:>8.2f} {budget:>11.1f} {seconds / budget:>6.2f}"
                  + (f"  FAILED: {failed}" if failed else ""), flush=True)
    finally:
        remote.RemoteRunner.__call__ = call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("assignments", nargs="*", help="default: all of solutions/")
    args = parser.parse_args()
    names = args.assignments or sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    monitoring_overhead(args.repeats)
    print()
    budget_headroom(names)
    if not args.overhead_only:
        print()
        autograde_times(names, args.repeats)


if __name__ == "__main__":
    main()
