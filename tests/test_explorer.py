"""The explorer: widget callbacks drive the outputs, the cache, no background work before a
control changes (so executing a notebook without a display runs nothing), the static HTML/JS
version, and both in a real browser (the Voila app and the book page)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import torch

import robustlab as rl
from robustlab import widgets, zoo

from .browser import artifacts_dir, browser_page, serve

ROOT = Path(__file__).resolve().parents[1]
WORKER = "robustlab-explorer-precompute"


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WORKER and t.is_alive()]


@pytest.fixture(scope="module")
def models():
    return {"standard": zoo.load("mnist-standard"), "robust": zoo.load("mnist-pgd-linf-0.3")}


@pytest.fixture(scope="module")
def digits(embedded):
    idx = torch.tensor([3, 1500, 4200])
    return embedded.x[idx], embedded.y[idx]


@pytest.fixture
def app(models, digits):
    ex = widgets.explorer(models, x=digits[0], y=digits[1])
    yield ex
    ex.close()


def test_construction_runs_no_background_work(app):
    # What executing a notebook without a display does: build the app, show the first frame.
    assert not workers()
    assert bytes(app.picture.value).startswith(b"\x89PNG") and "standard: clean" in app.labels.value
    assert app.data.misses == 1 and len(app.data._frames) == 1


def test_controls_drive_the_pictures_and_labels(app):
    before_picture, before_labels = app.picture.value, app.labels.value
    app.eps.value = 0.3
    assert app.picture.value != before_picture
    assert "eps=0.3" in app.labels.value and app.labels.value != before_labels
    # At eps 0.3 PGD fools the standard model on these digits, not the PGD-trained one.
    lines = app.labels.value.split("\n")
    assert "FOOLED" in next(line for line in lines if line.startswith("standard:"))
    assert "FOOLED" not in next(line for line in lines if line.startswith("robust:"))
    for control, value, expect in ((app.method, "integrated_gradients", None), (app.attack, "fgsm", "FGSM"),
                                   (app.image, 2, "image 2"), (app.right, "standard", None)):
        picture = app.picture.value
        control.value = value
        assert app.picture.value != picture, control.description
        if expect:
            assert expect in app.labels.value
    # Switching the norm moves the slider onto the L2 grid at the same position.
    position = app.eps.options.index(app.eps.value)
    app.norm.value = "l2"
    assert app.eps.options == widgets.EPS_GRID["l2"] and app.eps.index == position
    assert "l2 eps=3" in app.labels.value


def test_cache_and_background_precompute(app):
    app.eps.value = 0.05  # the first change starts the background worker
    assert len(workers()) == 1
    deadline = time.time() + 120
    while workers() and time.time() < deadline:
        time.sleep(0.2)
    assert not workers(), "the worker should stop once the epsilon grid is cached"
    for eps in widgets.EPS_GRID["linf"]:
        assert app.data.cached(0, "linf", "pgd", eps, "gradient")
    hits = app.data.hits
    app.eps.value = 0.2
    assert app.last_update_cached and app.data.hits == hits + 1
    # A settings change restarts the worker for the new settings.
    app.method.value = "grad_x_input"
    assert len(workers()) == 1


def test_stop_worker_ends_the_background_work_after_the_current_frame(app):
    app.eps.value = 0.05
    assert len(workers()) == 1
    assert app.stop_worker(timeout=60) and not workers()
    assert sum(app.data.cached(0, "linf", "pgd", e, "gradient") for e in widgets.EPS_GRID["linf"]) < 13
    frames = len(app.data._frames)
    app.eps.value = 0.1  # once stopped, a change redraws but computes nothing in the background
    for thread in workers():
        thread.join(10)
    assert "eps=0.1" in app.labels.value and not workers()
    assert len(app.data._frames) <= frames + 1  # at most the frame on display


EXIT_SCRIPT = """
from robustlab import widgets
app = widgets.explorer(("mnist-standard", "mnist-pgd-linf-0.3"), n_images=2)
app.eps.value = widgets.EPS_GRID["linf"][6]  # a slider move starts the background worker
print("worker running at exit:", app._worker is not None and app._worker.is_alive(), flush=True)
"""


def test_a_plain_python_process_exits_cleanly_while_the_worker_runs(tmp_path):
    """Interpreter exit used to kill the daemon worker inside a torch op: the process aborted with
    "terminate called without an active exception" (exit code 134)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_DATA": str(tmp_path / "nodata")}
    result = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=env)
    assert "worker running at exit: True" in result.stdout, result.stdout + result.stderr
    assert "terminate called" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]


def test_bad_settings_are_refused(models, digits):
    data = widgets.ExplorerData(models, *digits)
    with pytest.raises(ValueError, match="norm"):
        data.frame(0, "l1", "pgd", 0.1, "gradient")
    with pytest.raises(ValueError, match=r"index must lie in \[0, 2\], got 3"):
        data.frame(3, "linf", "pgd", 0.1, "gradient")
    with pytest.raises(ValueError, match="at least two models"):
        widgets.explorer({"one": models["standard"]}, x=digits[0], y=digits[1])


def test_static_explorer_embeds_every_frame(models, digits):
    grid = [0.0, 0.15, 0.3]
    page = widgets.static_explorer(models, x=digits[0], y=digits[1], n_images=2, eps_grid=grid)
    assert page.count("data:image/png;base64,") == 2 * len(grid)
    assert f'max="{len(grid) - 1}"' in page and "addEventListener(\"input\"" in page
    assert "FOOLED" in page  # the captions come with the frames


def test_executing_the_app_notebook_without_a_display_runs_nothing_in_the_background():
    """As nbgrader, papermill or a book build would: the cells run, the app is returned as a
    widget, and no precompute thread exists in the kernel afterwards."""
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "apps" / "explorer.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        f"import threading; print(sorted(t.name for t in threading.enumerate() if t.name == {WORKER!r}))"))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(o.output_type == "error" for o in outputs)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert outputs[-1].text.strip() == "[]"


# -- in a real browser ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_voila_app_in_a_browser():
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    voila = bin_dir / "voila"
    if not voila.exists():
        pytest.skip("voila is not installed (pip install -e '.[explore]')")
    env = dict(os.environ, PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    # The Makefile's `make explore` flags, on a free port and the loopback address.
    flags = subprocess.run(["make", "-s", "--no-print-directory", "print-voila-flags", f"EXPLORE_PORT={port}"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    server = subprocess.Popen([str(voila), "apps/explorer.ipynb", *flags, "--Voila.ip=127.0.0.1"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shots = artifacts_dir("explorer")
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("voila did not start:\n" + (server.stdout.read() if server.poll() else ""))
                time.sleep(0.5)
        with browser_page() as page:
            page.goto(url, timeout=180_000)
            labels = page.locator("pre", has_text="mnist-standard: clean")
            labels.wait_for(timeout=180_000)
            picture = page.locator(".widget-image img, img.widget-image").first
            picture.wait_for()
            before_src, before_text = picture.get_attribute("src"), labels.inner_text()
            assert "eps=0.1" in before_text
            page.screenshot(path=str(shots / "voila-before.png"), full_page=True)
            # Move the epsilon slider with the keyboard, as a person would: eps 0.1 -> 0.3.
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.focus()
            for _ in range(8):
                page.keyboard.press("ArrowRight")
            page.wait_for_function("t => !document.body.innerText.includes(t)", arg="eps=0.1\n", timeout=60_000)
            page.locator("pre", has_text="eps=0.3").wait_for(timeout=60_000)
            after_text = labels.inner_text()
            assert picture.get_attribute("src") != before_src, "the adversarial picture did not change"
            assert after_text != before_text and "FOOLED" in after_text.split("\n")[1], after_text
            body = page.inner_text("body")
            assert "Traceback" not in body and "Error" not in body, body[-2000:]
            assert not [e for e in page.errors if e.startswith("page error")], page.errors
            page.screenshot(path=str(shots / "voila-after.png"), full_page=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_static_explorer_page_in_a_browser(book_html):
    shots = artifacts_dir("explorer")
    with serve(book_html) as base, browser_page() as page:
        page.goto(f"{base}/book/explorer.html", wait_until="load")
        root = page.locator(".rl-explorer")
        frame, value, caption = root.locator(".rl-frame"), root.locator(".rl-eps-value"), root.locator(".rl-labels")
        page.wait_for_function("() => document.querySelector('.rl-explorer .rl-frame').naturalWidth > 0")
        src, eps, text = frame.get_attribute("src"), value.inner_text(), caption.inner_text()
        root.locator(".rl-eps").focus()
        page.keyboard.press("End")  # the largest epsilon
        assert frame.get_attribute("src") != src and value.inner_text() != eps
        assert value.inner_text() == "0.300" and caption.inner_text() != text
        page.screenshot(path=str(shots / "book-static-eps-max.png"), full_page=True)
        at_max = frame.get_attribute("src")
        root.locator(".rl-image").select_option("1")  # another digit, same epsilon
        assert frame.get_attribute("src") not in (src, at_max) and value.inner_text() == "0.300"
        assert not page.errors, page.errors


def test_min_norm_distances_match_a_linear_models_closed_form():
    # Two classes, logit difference (w1 - w0).x + b1 - b0: the L2 distance to the boundary is
    # |margin| / ||w1 - w0||_2, as long as the nearest boundary point lies inside [0, 1].
    g = torch.Generator().manual_seed(0)
    weight = torch.zeros(2, 1, 6, 6)
    weight[1] = torch.randn(1, 6, 6, generator=g)
    x = 0.4 + 0.2 * torch.rand(3, 1, 6, 6, generator=g)
    bias = torch.tensor([0.0, -float((x[0].flatten() @ weight[1].flatten()).item()) + 0.3])
    model = rl.testing.LinearMulti(weight, bias).eval()
    y = model(x).argmax(1)
    margin = (model(x)[:, 1] - model(x)[:, 0]).abs()
    expected = margin / weight[1].norm()
    data = widgets.ExplorerData({"a": model, "b": model}, x, y)
    found = [data.min_norm(i, "l2")["a"] for i in range(3)]
    assert found == pytest.approx(expected.tolist(), rel=0.02)
    assert data.min_norm(0, "l2") == data.min_norm(0, "L2")  # cached, and the norm name is checked
    with pytest.raises(ValueError, match="norm"):
        data.min_norm(0, "l1")
    with pytest.raises(ValueError, match=r"index must lie in \[0, 2\], got 5"):
        data.min_norm(5, "l2")


def test_static_explorer_is_built_from_its_template_with_min_norm_distances(models, digits):
    page = widgets.static_explorer(models, x=digits[0], y=digits[1], n_images=2, eps_grid=[0.0, 0.3])
    assert "$" not in page.replace("$$", "")  # every placeholder of explorer.html was filled
    assert "smallest fooling perturbation (FMN, linf)" in page
    data = widgets.ExplorerData(models, digits[0][:2], digits[1][:2])
    stored = json.loads(page.split("const minNorms = ", 1)[1].split(";", 1)[0])
    for i in range(2):  # JSON has no infinity: "none found" is null
        expected = {k: (v if v != float("inf") else None) for k, v in data.min_norm(i, "linf").items()}
        assert stored[i] == pytest.approx(expected)


def test_the_perturbation_has_a_zero_centred_diverging_colour_bar(models, digits):
    data = widgets.ExplorerData(models, *digits)
    renderer = widgets.FrameRenderer(list(models))
    renderer.render(data.frame(0, "linf", "pgd", 0.2, "gradient"))
    perturbation = renderer.images[0][2]
    low, high = perturbation.get_clim()
    assert low == -high and high > 0 and perturbation.get_cmap().name == "RdBu_r"
    assert perturbation.colorbar is not None
