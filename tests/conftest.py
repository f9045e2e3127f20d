import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from robustlab import data, models


@pytest.fixture(scope="session")
def embedded():
    return data.embedded_mnist()


@pytest.fixture
def mnist_batch(embedded):
    """32 real digits, 3-4 of each class (the embedded set is sorted by label)."""
    idx = torch.arange(0, 5000, 157)[:32]
    return embedded.x[idx].clone(), embedded.y[idx].clone()


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    return models.SmallCNN().eval()


ROOT = Path(__file__).resolve().parents[1]


def peers_required() -> bool:
    """Whether a missing peer library fails the test instead of skipping it: on CI (``CI`` set to
    anything but ``0``/``false``, as CI services do) or with ``ROBUSTLAB_REQUIRE_PEERS=1``."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("ROBUSTLAB_REQUIRE_PEERS") == "1"


def require_peer(module_name: str):
    """Import and return the peer library ``module_name`` that an agreement test compares against
    (torchattacks, captum, statsmodels, ART). When it cannot be imported the test is skipped
    locally but fails on CI, so that CI cannot pass by skipping the agreement tests."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        msg = (f"peer library {module_name!r} cannot be imported ({exc}); install the test peers with "
               "make setup (pip install -e '.[dev]' and torchattacks)")
        if peers_required():
            pytest.fail(msg + "; they are required here (CI or ROBUSTLAB_REQUIRE_PEERS=1)", pytrace=False)
        pytest.skip(msg)


def toc_pages() -> list[str]:
    """The book's pages in reading order, as paths without suffix (``book/attacks``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]


@pytest.fixture(scope="session")
def book_html(tmp_path_factory) -> Path:
    """Build the whole book once per session from the working tree into a fresh directory
    (no execution cache, so every page really runs) with warnings as errors.

    ``ROBUSTLAB_BOOK_HTML`` may name an already built ``_build/html`` to skip the build while
    working on these tests."""
    if os.environ.get("ROBUSTLAB_BOOK_HTML"):
        return Path(os.environ["ROBUSTLAB_BOOK_HTML"])
    jb = Path(sys.executable).with_name("jupyter-book")
    jb = str(jb) if jb.exists() else shutil.which("jupyter-book")
    if jb is None:
        pytest.skip("jupyter-book is not installed (pip install -e '.[book]')")
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run([jb, "build", "--all", "-W", "--keep-going", "--path-output", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"
