"""The kernel-free explorer for the online book: precomputed frames in an HTML template
(``explorer.html``, package data) with a plain JavaScript slider."""

from __future__ import annotations

import base64
import html
import json
import math
import string
import uuid
from importlib import resources
from typing import Mapping, Sequence

from torch import Tensor, nn

from .._checks import check_choice
from .frames import DEFAULT_MODELS, EPS_GRID, NORMS, ExplorerData, _default_images, _load_models, summary
from .render import FrameRenderer

__all__ = ["static_explorer"]


def static_explorer(models: Sequence[str] | Mapping[str, nn.Module] = DEFAULT_MODELS, *, x: Tensor | None = None,
                    y: Tensor | None = None, n_images: int = 3, norm: str = "linf", attack: str = "pgd",
                    method: str = "gradient", eps_grid: Sequence[float] | None = None) -> str:
    """A kernel-free explorer: precomputed frames and a plain HTML/JavaScript slider.

    The frames are made by the same :class:`ExplorerData` and :class:`FrameRenderer` as the live
    explorer, for every epsilon of ``eps_grid`` (default: every other value of the live grid) and
    each of the first ``n_images`` images.

    Beside the slider it shows each model's minimum-norm distance for the image (FMN, see
    :meth:`ExplorerData.min_norm`), marked when it lies within the slider's epsilon. The page
    comes from the template ``explorer.html`` shipped with the package.

    Returns:
        An HTML snippet (display it with ``IPython.display.HTML``): an epsilon slider, an image
        picker, the minimum-norm distances, the frame and the predictions, with the frames
        embedded as PNG data.
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
    min_norms = [{name: (d if math.isfinite(d) else None) for name, d in data.min_norm(i, norm).items()}
                 for i in range(len(data.y))]
    options = "".join(f'<option value="{i}">image {i} (class {int(data.y[i])})</option>' for i in range(len(data.y)))
    template = string.Template(resources.files(__package__).joinpath("explorer.html").read_text(encoding="utf-8"))
    return template.substitute(
        uid="rl-explorer-" + uuid.uuid4().hex[:8], norm=html.escape(norm), attack=html.escape(attack.upper()),
        last=len(grid) - 1, start=len(grid) // 2, options=options, frames=json.dumps(frames),
        captions=json.dumps(captions), grid=json.dumps([float(e) for e in grid]), min_norms=json.dumps(min_norms))
