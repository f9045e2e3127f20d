"""What the explorer shows: the settings' grids, one :class:`Frame` per setting, and
:class:`ExplorerData`, which computes and caches frames (attacks, saliency maps, predictions)
and each model's minimum-norm distance per image."""

from __future__ import annotations

import collections
import threading
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import attacks, saliency
from .._checks import check_choice, check_images, check_labels

__all__ = ["EPS_GRID", "NORMS", "ATTACKS", "METHODS", "DEFAULT_MODELS", "PGD_STEPS", "MIN_NORM_STEPS",
           "Prediction", "ModelFrame", "Frame", "ExplorerData", "summary"]

NORMS = ("linf", "l2")
ATTACKS = ("fgsm", "pgd")
METHODS = ("gradient", "grad_x_input", "smoothgrad", "integrated_gradients")
# The slider snaps to these values, so that moves land on cached frames.
EPS_GRID = {"linf": tuple(round(0.025 * i, 3) for i in range(13)), "l2": tuple(round(0.25 * i, 2) for i in range(13))}
PGD_STEPS = 20
MIN_NORM_STEPS = 100
# Fewer samples/steps than the library defaults: enough for a picture, fast enough for a slider.
METHOD_OPTIONS = {"smoothgrad": {"samples": 32, "sigma": 0.15}, "integrated_gradients": {"steps": 32}}
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
        self._min_norms: dict[tuple[int, str], dict[str, float]] = {}
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

    def min_norm(self, index: int, norm: str) -> dict[str, float]:
        """Per model, the norm of the smallest perturbation of image ``index`` that changes its
        prediction, found by FMN (:func:`robustlab.fmn`, 100 steps, the minimum-norm attack of
        the evaluation chapter): 0 where the model is already wrong, ``inf`` where none was found.
        An upper bound on the true distance to the decision boundary; cached."""
        norm = check_choice(norm, "norm", NORMS)
        if not 0 <= int(index) < len(self.y):
            raise ValueError(f"index must lie in [0, {len(self.y) - 1}], got {index}")
        key = (int(index), norm)
        with self.lock:
            if key not in self._min_norms:
                x, y = self.x[index:index + 1], self.y[index:index + 1]
                self._min_norms[key] = {name: float(attacks.fmn(model, x, y, norm=norm, steps=MIN_NORM_STEPS).norm[0])
                                        for name, model in self.models.items()}
            return dict(self._min_norms[key])

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
    from .. import zoo

    return {name: zoo.load(name) for name in models}


def _default_images(n: int) -> tuple[Tensor, Tensor]:
    from .. import report

    test = report.eval_set(n=n)
    return test.x, test.y
