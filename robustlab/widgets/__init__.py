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

The package: ``frames`` (the settings, :class:`Frame`, :class:`ExplorerData`), ``render``
(:class:`FrameRenderer`), ``live`` (:class:`Explorer`, :func:`explorer`) and ``static``
(:func:`static_explorer` and its template ``explorer.html``).
"""

from __future__ import annotations

from .frames import (
                     ATTACKS,
                     DEFAULT_MODELS,
                     EPS_GRID,
                     METHODS,
                     MIN_NORM_STEPS,
                     NORMS,
                     PGD_STEPS,
                     ExplorerData,
                     Frame,
                     ModelFrame,
                     Prediction,
                     summary,
)
from .live import WORKER_JOIN_TIMEOUT_S, Explorer, explorer
from .render import FrameRenderer
from .static import static_explorer

__all__ = ["EPS_GRID", "NORMS", "ATTACKS", "METHODS", "DEFAULT_MODELS", "PGD_STEPS", "MIN_NORM_STEPS",
           "WORKER_JOIN_TIMEOUT_S", "ExplorerData", "Frame", "ModelFrame", "Prediction", "FrameRenderer", "Explorer",
           "explorer", "static_explorer", "summary"]
