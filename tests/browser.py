"""Helpers for the tests that open pages in a real browser (Debian's chromium via Playwright).

See DEVELOPERS.md for the set-up. Without a chromium the browser tests are skipped, unless
``ROBUSTLAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``), in which case they fail: CI must not pass
by skipping them.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The flags a sandboxed, offline machine needs (no GPU, no network, no first-run dialogs).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def artifacts_dir(*parts: str) -> Path:
    """Where screenshots go: ``$ROBUSTLAB_ARTIFACTS`` or ``_build/test-artifacts``."""
    base = Path(os.environ.get("ROBUSTLAB_ARTIFACTS", ROOT / "_build" / "test-artifacts"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium_path() -> str:
    """The chromium executable, or skip (or fail under ROBUSTLAB_REQUIRE_BROWSER=1)."""
    path = os.environ.get("ROBUSTLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    missing = []
    if not Path(path).exists():
        missing.append(f"no chromium at {path!r} (apt-get install -y chromium, or set ROBUSTLAB_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright is not installed (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("ROBUSTLAB_REQUIRE_BROWSER") == "1":
            pytest.fail("browser tests are required here but " + "; ".join(missing))
        pytest.skip("; ".join(missing))
    return path


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` over HTTP on a free local port; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser_page():
    """A fresh chromium page that records console errors and failed requests."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.errors = []  # type: ignore[attr-defined]
            page.on("pageerror", lambda exc: page.errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: page.errors.append(f"request failed: {req.url}"))
            yield page
        finally:
            browser.close()
