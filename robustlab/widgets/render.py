"""Drawing a :class:`~robustlab.widgets.frames.Frame` with matplotlib, for the live and the
static explorer alike."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

from .frames import Frame

__all__ = ["FrameRenderer"]


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
                if c == 2:  # a diverging map centred on zero: red adds ink, blue removes it
                    self.fig.colorbar(row[-1], ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
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
