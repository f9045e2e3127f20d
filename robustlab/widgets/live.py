"""The live explorer: an ipywidgets app over :class:`ExplorerData` that precomputes the
epsilon grid of the current settings in a background thread once a control moves."""

from __future__ import annotations

import atexit
import html
import threading
import time
import weakref
from typing import Mapping, Sequence

from torch import Tensor, nn

from .frames import DEFAULT_MODELS, EPS_GRID, METHODS, ExplorerData, Frame, _default_images, _load_models, summary
from .render import FrameRenderer

__all__ = ["Explorer", "explorer", "WORKER_JOIN_TIMEOUT_S"]

# How long interpreter exit (and close()) waits for a worker to finish its current frame.
WORKER_JOIN_TIMEOUT_S = 30.0


class Explorer:
    """The widget app; ``Explorer(...).widget`` is what a notebook displays.

    Attributes:
        eps, norm, attack, method, image, left, right: the controls (ipywidgets).
        picture: an ``ipywidgets.Image`` with the current frame.
        labels: an ``ipywidgets.HTML`` with the predictions (see :func:`summary`).
        last_update_s: seconds the last update took; last_update_cached: whether it hit the cache.
    """

    def __init__(self, models: Sequence[str] | Mapping[str, nn.Module] = DEFAULT_MODELS, *,
                 x: Tensor | None = None, y: Tensor | None = None, n_images: int = 20):
        import ipywidgets as w

        self.all_models = _load_models(models)
        if len(self.all_models) < 2:
            raise ValueError(f"models must name at least two models to compare, got {list(self.all_models)}")
        if x is None:
            x, y = _default_images(n_images)
        self.data = ExplorerData(self.all_models, x, y)
        names = list(self.all_models)
        self.eps = w.SelectionSlider(options=EPS_GRID["linf"], value=EPS_GRID["linf"][4], description="epsilon",
                                     continuous_update=True, layout=w.Layout(width="420px"))
        self.norm = w.ToggleButtons(options=[("Linf", "linf"), ("L2", "l2")], value="linf", description="norm")
        self.attack = w.ToggleButtons(options=[("FGSM", "fgsm"), ("PGD", "pgd")], value="pgd", description="attack")
        self.method = w.Dropdown(options=[(m.replace("_", " "), m) for m in METHODS], value="gradient",
                                 description="saliency")
        self.image = w.IntSlider(value=0, min=0, max=len(self.data.y) - 1, description="image")
        self.left = w.Dropdown(options=names, value=names[0], description="model A")
        self.right = w.Dropdown(options=names, value=names[1], description="model B")
        self.picture = w.Image(format="png")
        self.labels = w.HTML()
        self.status = w.HTML()
        self._renderers: dict[tuple[str, str], FrameRenderer] = {}
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()  # guards the decisions to start and to end the worker
        self._wanted: tuple | None = None
        self._stop = threading.Event()
        _LIVE_EXPLORERS.add(self)  # so that interpreter exit can stop its worker
        self.last_update_s = 0.0
        self.last_update_cached = False
        for control in (self.eps, self.norm, self.attack, self.method, self.image, self.left, self.right):
            control.observe(self._on_change, names="value")
        self.widget = w.VBox([
            w.HBox([self.eps, self.norm]), w.HBox([self.attack, self.method]),
            w.HBox([self.image, self.left, self.right]), self.picture, self.labels, self.status])
        self.update()

    # -- state ---------------------------------------------------------------------------------
    def settings(self) -> tuple[int, str, str, float, str]:
        return self.image.value, self.norm.value, self.attack.value, float(self.eps.value), self.method.value

    def _renderer(self) -> FrameRenderer:
        pair = (self.left.value, self.right.value)
        if pair not in self._renderers:
            self._renderers[pair] = FrameRenderer(list(pair))
        return self._renderers[pair]

    # -- updates -------------------------------------------------------------------------------
    def _on_change(self, change) -> None:
        if change["owner"] is self.norm:  # the same slider position on the other norm's grid
            old = EPS_GRID[change["old"]]
            position = old.index(self.eps.value) if self.eps.value in old else 0
            self.eps.unobserve(self._on_change, names="value")
            try:
                self.eps.options = EPS_GRID[self.norm.value]
                self.eps.index = position
            finally:
                self.eps.observe(self._on_change, names="value")
        self.update()
        self._precompute()

    def update(self) -> None:
        """Computes (or fetches) the frame of the current settings and redraws."""
        start = time.perf_counter()
        settings = self.settings()
        self.last_update_cached = self.data.cached(*settings)
        frame = self.data.frame(*settings)
        view = Frame(frame.index, frame.label, frame.norm, frame.attack, frame.eps, frame.method,
                     {name: frame.models[name] for name in (self.left.value, self.right.value)})
        self.picture.value = self._renderer().render(view)
        self.labels.value = ("<pre style='margin:0'>" + html.escape(f"image {frame.index}, true class {frame.label}; "
                             f"{frame.attack.upper()} {frame.norm} eps={frame.eps:g}\n" + summary(view)) + "</pre>")
        self.last_update_s = time.perf_counter() - start
        self.status.value = (f"<small>{'cached' if self.last_update_cached else 'computed'} in "
                             f"{1000 * self.last_update_s:.0f} ms</small>")

    def _precompute(self) -> None:
        """Fills the cache for the epsilon grid of the current settings in a background thread
        (started on the first change of a control; restarted when the settings change)."""
        index, norm, attack, _, method = self.settings()
        with self._worker_lock:
            self._wanted = (index, norm, attack, method)
            if self._worker is not None:
                return  # the running worker picks up the new settings before it ends
            self._worker = threading.Thread(target=self._work, name="robustlab-explorer-precompute", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._worker_lock:
                index, norm, attack, method = self._wanted
                todo = [e for e in EPS_GRID[norm] if not self.data.cached(index, norm, attack, e, method)]
                if not todo or self._stop.is_set():
                    self._worker = None
                    return
            current = float(self.eps.value)
            eps = min(todo, key=lambda e: abs(e - current))  # nearest first
            self.data.frame(index, norm, attack, eps, method)

    def stop_worker(self, timeout: float = WORKER_JOIN_TIMEOUT_S) -> bool:
        """Stops the background work: the worker ends after the frame it is computing. Waits up
        to ``timeout`` seconds; returns whether no worker is left running."""
        self._stop.set()
        with self._worker_lock:
            worker = self._worker
        if worker is None or worker is threading.current_thread():
            return True
        worker.join(timeout=timeout)
        return not worker.is_alive()

    def close(self) -> None:
        """Stops the background work and closes the widgets."""
        self.stop_worker()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


_LIVE_EXPLORERS: weakref.WeakSet[Explorer] = weakref.WeakSet()


@atexit.register
def _stop_workers_at_exit() -> None:
    """Interpreter exit does not wait for daemon threads: it tears down the runtime under them, and
    a worker caught inside a torch operation then aborts the whole process ("terminate called
    without an active exception", exit code 134). atexit handlers run while the threads still
    exist, so stop each worker here and wait for it to finish its current frame."""
    deadline = time.monotonic() + WORKER_JOIN_TIMEOUT_S
    for app in list(_LIVE_EXPLORERS):
        app.stop_worker(timeout=max(deadline - time.monotonic(), 0.0))


def explorer(models: Sequence[str] | Mapping[str, nn.Module] = DEFAULT_MODELS, *, x: Tensor | None = None,
             y: Tensor | None = None, n_images: int = 20) -> Explorer:
    """The explorer app (display the returned object in a notebook, or serve it with Voila:
    ``make explore``).

    Args:
        models: at least two zoo names, or a name -> model mapping (default: the standard, the Linf
            and the L2 PGD-trained zoo models; the first two are shown side by side).
        x, y: the images to explore, (N, C, H, W) in [0, 1] and (N,) labels; default the first
            ``n_images`` digits of the offline evaluation set.
        n_images: how many default images.
    """
    return Explorer(models, x=x, y=y, n_images=n_images)
