"""Benchmark: how long the book takes to build from a clean clone (target: within 10 minutes).

Clones the committed ``HEAD`` into a temporary folder (no ``_build``, no execution cache, so every
page really runs), then builds it as ``make book`` does (``jupyter-book build --all -W``) with this
environment's ``jupyter-book``. Prints the wall time, its ratio to the 600 s budget, and the
execution time of each page as jupyter-cache recorded it (the pages are the bulk of the build;
the rest is Sphinx). Offline: nothing is downloaded (the pages read the zoo and ``results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600.0


def page_times(build: Path) -> dict[str, float]:
    """Page -> execution seconds, from the execution cache's database (empty if it has none)."""
    db = build / ".jupyter_cache" / "global.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT uri, data FROM nbcache").fetchall()
    out = {}
    for uri, data in rows:
        seconds = json.loads(data).get("execution_seconds") if data else None
        if seconds is not None:
            out[Path(uri).name] = float(seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone and its build")
    args = parser.parse_args(argv)
    jb = Path(sys.executable).with_name("jupyter-book")
    if not jb.exists():
        parser.error(f"jupyter-book is not installed beside {sys.executable}: run make setup")
    tmp = Path(tempfile.mkdtemp(prefix="robustlab-book-"))
    try:
        clone = tmp / "clone"
        subprocess.run(["git", "clone", "--quiet", "--local", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        start = time.perf_counter()
        # The pages import robustlab from the clone, not from this checkout's editable install.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(clone), os.environ.get("PYTHONPATH")]))}
        result = subprocess.run([str(jb), "build", "--all", "-W", "--keep-going", str(clone)], cwd=clone,
                                capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stdout[-3000:] + result.stderr[-3000:])
            print(f"the build failed (exit {result.returncode}) after {seconds:.0f} s")
            return 1
        print(f"book build from a clean clone of {commit}: {seconds:.0f} s; / budget {BUDGET_S:.0f} s = "
              f"{seconds / BUDGET_S:.2f} (target <= 1)")
        pages = page_times(clone / "_build")
        if pages:
            print(f"page execution, {sum(pages.values()):.0f} s in all ({sum(pages.values()) / seconds:.2f} of the "
                  "build):")
            for name, s in sorted(pages.items(), key=lambda kv: -kv[1]):
                print(f"  {name:28} {s:6.1f} s")
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
