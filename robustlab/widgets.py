"""The interactive explorer: epsilon against saliency, a standard against a robust model.

``explorer()`` builds an ipywidgets 8 app: sliders and menus for epsilon, the norm, the attack,
the saliency method, the image and the two models; for each model it shows the clean image, the
adversarial image, the perturbation, the saliency maps on the clean and on the adversarial
input, and the predicted class with its probability. Attacks and maps are computed on demand
and cached; the first change of a control starts a background thread that fills the cache for
the whole epsilon grid of the current settings, so later slider moves only redraw. The worker
checks a stop event between frames; ``Explorer.close()`` and an ``atexit`` hook set it and wait
for the frame in progress, so a plain Python process that used the explorer exits cleanly.

Nothing runs in the background before a person moves a control: executing a notebook that
builds the explorer (the book build, nbgrader, papermill) computes the first frame and returns.

``static_explorer()`` renders the same frames (the same code: :class:`ExplorerData` and
:class:`FrameRenderer`) for an epsilon grid and a few images into one self-contained HTML
snippet with a plain JavaScript slider, for the online book where no kernel exists.
"""

from __future__ import annotations

import atexit
import base64
import collections
import html
import io
import json
import threading
import time
import uuid
import weakref
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import attacks, saliency
from ._checks import check_choice, check_images, check_labels

__all__ = ["EPS_GRID", "NORMS", "ATTACKS", "METHODS", "ExplorerData", "Frame", "FrameRenderer", "Explorer",
           "explorer", "static_explorer"]

NORMS = ("linf", "l2")
ATTACKS = ("fgsm", "pgd")
METHODS = ("gradient", "grad_x_input", "smoothgrad", "integrated_gradients")
# The slider snaps to these values, so that moves land on cached frames.
EPS_GRID = {"linf": tuple(round(0.025 * i, 3) for i in range(13)), "l2": tuple(round(0.25 * i, 2) for i in range(13))}
PGD_STEPS = 20
# Fewer samples/steps than the library defaults: enough for a picture, fast enough for a slider.
METHOD_OPTIONS = {"smoothgrad": {"samples": 32, "sigma": 0.15}, "integrated_gradients": {"steps": 32}}
# How long interpreter exit (and close()) waits for a worker to finish its current frame.
WORKER_JOIN_TIMEOUT_S = 30.0
# The standard model, the Linf PGD-trained one (robust up to eps 0.3, sparse gradient maps) and
# the L2 PGD-trained one (less robust in Linf, gradient maps that follow the digit).
DEFAULT_MODELS = ("mnist-standard", "mnist-pgd-linf-0.3", "mnist-pgd-l2-2.0")


class Prediction(NamedTuple):
    label: int
    probability: float


class ModelFrame(NamedTuple):
    """What the explorer shows for one model: images are (H, W) numpy arrays."""

    clean: np.ndarray
    adversarial: np.ndarray
    perturbation: np.ndarray
    saliency_clean: np.ndarray
    saliency_adversarial: np.ndarray
    prediction_clean: Prediction
    prediction_adversarial: Prediction


class Frame(NamedTuple):
    """One picture of the explorer: the settings and a :class:`ModelFrame` per model."""

    index: int
    label: int
    norm: str
    attack: str
    eps: float
    method: str
    models: dict[str, ModelFrame]


class ExplorerData:
    """Computes and caches adversarial examples, saliency maps and predictions.

    Args:
        models: name -> model mapping images in [0, 1] to logits; or zoo names.
        x: images, (N, C, H, W), in [0, 1].
        y: their labels, (N,) int64.
        cache_size: how many frames to keep (least recently used ones are dropped).
    """

    def __init__(self, models: Mapping[str, nn.Module], x: Tensor, y: Tensor, *, cache_size: int = 4096):
        self.x = check_images(x)
        self.y = check_labels(y, self.x)
        if not models:
            raise ValueError("models must name at least one model, e.g. {'standard': model}")
        self.models = dict(models)
        for m in self.models.values():
            m.eval()
        self.cache_size = cache_size
        self._frames: collections.OrderedDict[tuple, Frame] = collections.OrderedDict()
        self.lock = threading.RLock()
        self.hits = self.misses = 0

    def key(self, index: int, norm: str, attack: str, eps: float, method: str) -> tuple:
        return (int(index), norm, attack, round(float(eps), 6), method)

    def cached(self, index: int, norm: str, attack: str, eps: float, method: str) -> bool:
        return self.key(index, norm, attack, eps, method) in self._frames

    def frame(self, index: int, norm: str, attack: str, eps: float, method: str) -> Frame:
        """The frame for these settings, from the cache or computed now."""
        check_choice(norm, "norm", NORMS)
        check_choice(attack, "attack", ATTACKS)
        check_choice(method, "method", METHODS)
        if not 0 <= int(index) < len(self.y):
            raise ValueError(f"index must lie in [0, {len(self.y) - 1}], got {index}")
        key = self.key(index, norm, attack, eps, method)
        with self.lock:
            if key in self._frames:
                self.hits += 1
                self._frames.move_to_end(key)
                return self._frames[key]
            self.misses += 1
            frame = self._compute(*key)
            self._frames[key] = frame
            while len(self._frames) > self.cache_size:
                self._frames.popitem(last=False)
            return frame

    def _adversarial(self, model: nn.Module, x: Tensor, y: Tensor, norm: str, attack: str, eps: float) -> Tensor:
        if eps == 0:
            return x
        if attack == "fgsm":
            return (attacks.fgsm if norm == "linf" else attacks.fgm)(model, x, y, eps=eps)
        return attacks.pgd(model, x, y, eps=eps, alpha=2.5 * eps / PGD_STEPS, steps=PGD_STEPS, norm=norm,
                           random_start=False)

    def _saliency(self, model: nn.Module, x: Tensor, target: Tensor, method: str) -> np.ndarray:
        options = dict(METHOD_OPTIONS.get(method, {}))
        if method == "smoothgrad":  # the same noise for every frame: maps differ only by the input
            options["generator"] = torch.Generator(device=x.device).manual_seed(0)
        attr = saliency.attribute(model, x, target, method=method, **options)
        return attr[0].abs().sum(dim=0).cpu().numpy()

    @staticmethod
    def _predict(model: nn.Module, x: Tensor) -> Prediction:
        with torch.no_grad():
            p = torch.softmax(model(x), dim=1)[0]
        label = int(p.argmax())
        return Prediction(label, float(p[label]))

    def _compute(self, index: int, norm: str, attack: str, eps: float, method: str) -> Frame:
        x, y = self.x[index:index + 1], self.y[index:index + 1]
        out = {}
        for name, model in self.models.items():
            x_adv = self._adversarial(model, x, y, norm, attack, eps)
            # Explain the true class on both inputs: the maps then show what changed for it.
            out[name] = ModelFrame(
                clean=x[0].mean(dim=0).cpu().numpy(), adversarial=x_adv[0].mean(dim=0).cpu().numpy(),
                perturbation=(x_adv - x)[0].mean(dim=0).cpu().numpy(),
                saliency_clean=self._saliency(model, x, y, method),
                saliency_adversarial=self._saliency(model, x_adv, y, method),
                prediction_clean=self._predict(model, x), prediction_adversarial=self._predict(model, x_adv))
        return Frame(index, int(y[0]), norm, attack, eps, method, out)


class FrameRenderer:
    """Draws frames into one matplotlib figure made once; only the pixel data and titles change
    between frames, which keeps a redraw far below the time of a new figure."""

    COLUMNS = ("clean", "adversarial", "perturbation", "saliency (clean)", "saliency (adversarial)")

    def __init__(self, model_names: Sequence[str], eps_max: Mapping[str, float] | None = None, dpi: int = 72):
        from matplotlib.figure import Figure  # no pyplot: no global state, nothing displayed

        self.names = list(model_names)
        self.dpi = dpi
        self.fig = Figure(figsize=(10, 2.3 * len(self.names)), dpi=dpi, layout="constrained")
        axes = self.fig.subplots(len(self.names), 5, squeeze=False)
        blank = np.zeros((28, 28))
        self.images, self.titles, self.row_labels = [], [], []
        for r, name in enumerate(self.names):
            row = []
            for c, col in enumerate(self.COLUMNS):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                cmap, vmin, vmax = ("gray", 0, 1) if c < 2 else ("RdBu_r", -0.3, 0.3) if c == 2 else ("inferno", 0, 1)
                row.append(ax.imshow(blank, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"))
                if r == 0:
                    ax.set_title(col, fontsize=10)
            axes[r, 0].set_ylabel(name, fontsize=9)
            self.images.append(row)
            self.titles.append((axes[r, 0], axes[r, 1]))

    def render(self, frame: Frame) -> bytes:
        """The frame as PNG bytes."""
        for r, name in enumerate(self.names):
            mf = frame.models[name]
            row = self.images[r]
            row[0].set_data(mf.clean)
            row[1].set_data(mf.adversarial)
            bound = max(float(np.abs(mf.perturbation).max()), 1e-3)
            row[2].set_data(mf.perturbation)
            row[2].set_clim(-bound, bound)
            for img, sal in ((row[3], mf.saliency_clean), (row[4], mf.saliency_adversarial)):
                img.set_data(sal)
                img.set_clim(0, max(float(np.percentile(sal, 99.5)), 1e-12))
            clean_ax, adv_ax = self.titles[r]
            clean_ax.set_xlabel(f"{mf.prediction_clean.label} ({100 * mf.prediction_clean.probability:.0f} %)",
                                fontsize=9)
            adv = mf.prediction_adversarial
            fooled = adv.label != frame.label
            adv_ax.set_xlabel(f"{adv.label} ({100 * adv.probability:.0f} %)",
                              fontsize=9, color="tab:red" if fooled else "black")
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()


def summary(frame: Frame) -> str:
    """One line per model: the predictions on the clean and the adversarial image."""
    lines = []
    for name, mf in frame.models.items():
        pc, pa = mf.prediction_clean, mf.prediction_adversarial
        lines.append(f"{name}: clean {pc.label} ({100 * pc.probability:.1f} %) -> adversarial {pa.label} "
                     f"({100 * pa.probability:.1f} %){'  FOOLED' if pa.label != frame.label else ''}")
    return "\n".join(lines)


def _load_models(models: Sequence[str] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(models, Mapping):
        return dict(models)
    from . import zoo

    return {name: zoo.load(name) for name in models}


def _default_images(n: int) -> tuple[Tensor, Tensor]:
    from . import report

    test = report.eval_set(n=n)
    return test.x, test.y


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


def static_explorer(models: Sequence[str] | Mapping[str, nn.Module] = DEFAULT_MODELS, *, x: Tensor | None = None,
                    y: Tensor | None = None, n_images: int = 3, norm: str = "linf", attack: str = "pgd",
                    method: str = "gradient", eps_grid: Sequence[float] | None = None) -> str:
    """A kernel-free explorer: precomputed frames and a plain HTML/JavaScript slider.

    The frames are made by the same :class:`ExplorerData` and :class:`FrameRenderer` as the live
    explorer, for every epsilon of ``eps_grid`` (default: every other value of the live grid) and
    each of the first ``n_images`` images.

    Returns:
        An HTML snippet (display it with ``IPython.display.HTML``): an epsilon slider, an image
        picker, the frame and the predictions, with the frames embedded as PNG data.
    """
    check_choice(norm, "norm", NORMS)
    loaded = _load_models(models)
    if x is None:
        x, y = _default_images(n_images)
    data = ExplorerData(loaded, x[:n_images], y[:n_images])
    grid = list(eps_grid if eps_grid is not None else EPS_GRID[norm][::2])
    renderer = FrameRenderer(list(loaded))
    frames, captions = [], []
    for index in range(len(data.y)):
        row, caps = [], []
        for eps in grid:
            frame = data.frame(index, norm, attack, eps, method)
            row.append("data:image/png;base64," + base64.b64encode(renderer.render(frame)).decode())
            caps.append(summary(frame))
        frames.append(row)
        captions.append(caps)
    uid = "rl-explorer-" + uuid.uuid4().hex[:8]
    options = "".join(f'<option value="{i}">image {i} (class {int(data.y[i])})</option>' for i in range(len(data.y)))
    return f"""
<div id="{uid}" class="rl-explorer" style="font-family: sans-serif">
  <div style="display:flex; gap:1.5em; align-items:center; flex-wrap:wrap">
    <label>epsilon ({norm}, {attack.upper()}): <input type="range" class="rl-eps" min="0" max="{len(grid) - 1}"
      step="1" value="{len(grid) // 2}" style="vertical-align:middle; width:16em">
      <output class="rl-eps-value"></output></label>
    <label>image <select class="rl-image">{options}</select></label>
  </div>
  <img class="rl-frame" alt="clean and adversarial image, perturbation and saliency maps" style="max-width:100%">
  <pre class="rl-labels" style="font-size:0.85em; margin:0"></pre>
</div>
<script>
(function() {{
  const root = document.getElementById("{uid}");
  const frames = {json.dumps(frames)};
  const captions = {json.dumps(captions)};
  const grid = {json.dumps([float(e) for e in grid])};
  const eps = root.querySelector(".rl-eps"), image = root.querySelector(".rl-image");
  function show() {{
    const i = Number(image.value), j = Number(eps.value);
    root.querySelector(".rl-frame").src = frames[i][j];
    root.querySelector(".rl-eps-value").textContent = grid[j].toFixed(3);
    root.querySelector(".rl-labels").textContent = captions[i][j];
  }}
  eps.addEventListener("input", show);
  image.addEventListener("change", show);
  show();
}})();
</script>
"""
