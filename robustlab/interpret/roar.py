"""ROAR and KAR (Hooker et al. 2019; used by Kim, Seo & Jeon 2019): remove (or keep) the pixels an
attribution ranks highest, retrain a fresh model on the modified data and measure its test
accuracy; a better attribution makes ROAR accuracy fall faster and KAR accuracy rise faster than a
random ranking.

What the removed pixels are replaced by matters (``FILLS``): the mean grey (Hooker et al.) or
black (zero) leaves the silhouette of the removed pixels in the image, and a retrained model can
read the class from that shape (on MNIST, where the ink is the digit, the image itself scores
well as an "attribution" under the zero fill); a blurred copy of the image fills them with a
low-pass version of what was there; noisy linear imputation (ROAD, Rong et al. 2022, see
:mod:`robustlab.interpret.road`) fills them from their neighbours and hides the shape best.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from .. import models
from .._checks import check_choice, check_flag, check_images, check_labels, check_number, eval_mode
from ..train import TrainConfig, fit
from ._common import FRACTIONS, check_removed, top_pixels
from ._common import check_attr as _check_attr
from .controls import random_attribution
from .road import noisy_linear_impute

__all__ = ["FRACTIONS", "FILLS", "BLUR_SIGMA", "mask_top", "fill_removed", "random_attribution", "RoarKarResult",
           "roar_kar", "roar_kar_scores"]

FILLS = ("mean", "zero", "blur", "impute")
"""The replacements of removed pixels that ``roar_kar`` and ``fill_removed`` know by name."""

BLUR_SIGMA = 2.0
"""Standard deviation, in pixels, of the Gaussian blur of the ``"blur"`` fill."""


def mask_top(x: Tensor, attr: Tensor, fraction: float, *, keep: bool = False,
             fill: float | Tensor = 0.0) -> Tensor:
    """Replaces the pixels that ``attr`` ranks highest (ROAR), or all the others (KAR).

    Pixels are ranked per example by ``|attr|`` summed over channels; the top
    ``round(fraction * H * W)`` are replaced by ``fill`` in every channel (``keep=False``), or
    kept while all other pixels are replaced (``keep=True``). Ties are broken by position, so
    the result is deterministic.

    Args:
        x: images, (N, C, H, W), in [0, 1].
        attr: attributions, (N, C, H, W).
        fraction: in [0, 1].
        keep: KAR instead of ROAR.
        fill: the replacement value, a number or a (C,) tensor (Hooker et al. use the
            per-channel dataset mean).

    Returns:
        the modified images, (N, C, H, W); ``x`` is not changed.
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    check_number(fraction, "fraction", low=0.0)
    if fraction > 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    check_flag(keep, "keep")
    n, c, h, w = x.shape
    top = top_pixels(attr, fraction)  # (N, 1, H, W)
    replace = ~top if keep else top
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    if fill_t.shape[0] not in (1, c):
        raise ValueError(f"fill must be a number or have one value per channel ({c}), "
                         f"got {fill_t.shape[0]} values")
    return torch.where(replace, fill_t.expand(c, h, w), x.detach())


def _check_fill(fill: object) -> None:
    """``fill`` must name one of :data:`FILLS` or be a number."""
    if isinstance(fill, str):
        check_choice(fill, "fill", FILLS)
    elif not isinstance(fill, (int, float)) or isinstance(fill, bool):
        raise ValueError(f"fill must be one of {', '.join(map(repr, FILLS))} or a number, got {fill!r}")


def fill_removed(x: Tensor, removed: Tensor, fill: str | float, *, mean: Tensor | None = None,
                 noise: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """Replaces the ``removed`` pixels of ``x`` (every channel) by a fill.

    Args:
        x: images, (N, C, H, W), in [0, 1].
        removed: (N, 1, H, W) or (N, H, W) bool, True where a pixel is removed.
        fill: ``"mean"`` (``mean``, one value per channel: Hooker et al.'s dataset mean),
            ``"zero"`` (black, MNIST's background), ``"blur"`` (a Gaussian blur of ``x`` with
            standard deviation :data:`BLUR_SIGMA` pixels), ``"impute"`` (noisy linear imputation,
            ROAD) or a number.
        mean: (C,) per-channel values for ``"mean"``.
        noise, generator: the imputation noise and its random source (``"impute"`` only).

    Returns:
        (N, C, H, W) images; ``x`` is not changed.
    """
    x = check_images(x)
    _check_fill(fill)
    removed = check_removed(removed, x)  # (N, 1, H, W)
    n, c, h, w = x.shape
    if fill == "impute":
        return noisy_linear_impute(x, removed, noise=noise, generator=generator)
    if fill == "blur":
        radius = int(math.ceil(3 * BLUR_SIGMA))
        # The kernel is clipped to the image: torchvision needs it no larger than the image.
        size = [min(2 * radius + 1, h - (h + 1) % 2), min(2 * radius + 1, w - (w + 1) % 2)]
        source = gaussian_blur(x.detach(), size, [BLUR_SIGMA] * 2)
    elif fill == "mean":
        if mean is None:
            raise ValueError("fill='mean' needs mean=, the per-channel value (e.g. the training images' mean)")
        mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
        if mean_t.numel() not in (1, c):
            raise ValueError(f"mean must hold one value per channel ({c}), got {mean_t.numel()} values")
        source = mean_t.reshape(1, -1, 1, 1).expand(n, c, h, w)
    else:
        source = torch.full_like(x, 0.0 if fill == "zero" else float(fill))
    return torch.where(removed, source, x.detach())


class RoarKarResult(NamedTuple):
    """Test accuracy of models retrained on masked data.

    Attributes:
        fractions: the fractions removed (ROAR) or kept (KAR).
        roar: name -> (repeats, len(fractions)) accuracies after removing the top pixels.
        kar: name -> (repeats, len(fractions)) accuracies after keeping only the top pixels.
        unmasked: (repeats,) accuracy of the same recipe on unmodified data.
        epochs: training epochs of each retrained model.
        roar_correct: name -> (repeats, len(fractions), N_test) bool, per test digit whether the
            retrained model got it right (for intervals over digits); empty when not recorded.
        kar_correct: the same for KAR.
    """

    fractions: tuple[float, ...]
    roar: dict[str, Tensor]
    kar: dict[str, Tensor]
    unmasked: Tensor
    epochs: int
    roar_correct: dict[str, Tensor] = {}
    kar_correct: dict[str, Tensor] = {}


def roar_kar(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
             attributions: Mapping[str, tuple[Tensor, Tensor]], *, fractions: Sequence[float] = FRACTIONS,
             repeats: int = 1, epochs: int = 3, arch: str | Callable[[], nn.Module] = "small-cnn",
             batch_size: int = 100,
             include_random: bool = True, kar: bool = True, fill: float | str = "mean", noise: float = 0.01,
             seed: int = 0, progress: bool = True) -> RoarKarResult:
    """ROAR and KAR (Hooker et al., 2019): retrain on masked data, measure masked test accuracy.

    For every attribution method and fraction, the top-ranked pixels of the training and the
    test images are removed (ROAR) or kept (KAR) and the others replaced by ``fill`` (see
    :func:`fill_removed`: by default the per-channel training mean, as in Hooker et al.; every
    fill but ``"impute"`` leaves the silhouette of the removed pixels visible, which a retrained
    model can read), a fresh ``arch`` model is trained for ``epochs`` epochs of standard
    training (Adam, lr 1e-3), and its accuracy on the masked test set is recorded; ``repeats``
    retrainings with different seeds give the spread. A random ranking (``"random"``) is added as the baseline.

    Args:
        train: (x, y) training images and labels.
        test: (x, y) test images and labels.
        attributions: name -> (attribution of train x, attribution of test x).
        fractions: fractions of pixels removed / kept.
        repeats: retrainings per point, with seeds ``seed + r``.
        epochs: epochs per retraining.
        arch: architecture of the retrained models: a name for ``robustlab.models.create`` or a
            function returning a fresh model (called after seeding).
        batch_size: training batch size.
        include_random: add the random baseline.
        kar: also run KAR (doubles the cost).
        fill: one of :data:`FILLS` or a number (:func:`fill_removed`); with ``"impute"`` this is
            ROAD with retraining (ROAR = MoRF; KAR keeping f = LeRF removing 1 - f).
        noise: the imputation noise of ``"impute"``.
        seed: base seed (random ranking, imputation noise and retraining).
        progress: show a progress bar over retrainings.

    Returns:
        :class:`RoarKarResult`.
    """
    (x_tr, y_tr), (x_te, y_te) = train, test
    check_images(x_tr, "train x")
    check_labels(y_tr, x_tr, "train y")
    check_images(x_te, "test x")
    check_labels(y_te, x_te, "test y")
    check_number(repeats, "repeats", low=1, integer=True)
    check_number(epochs, "epochs", low=1, integer=True)
    for f in fractions:
        check_number(f, "fraction", low=0.0)
        if f > 1:  # before any retraining, not when mask_top meets it
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
    attributions = dict(attributions)
    for name, (a_tr, a_te) in attributions.items():
        _check_attr(a_tr, x_tr, f"attributions[{name!r}][0]")
        _check_attr(a_te, x_te, f"attributions[{name!r}][1]")
    if include_random:
        g = torch.Generator(device=x_tr.device).manual_seed(seed)
        attributions["random"] = (random_attribution(x_tr, generator=g), random_attribution(x_te, generator=g))
    _check_fill(fill)
    check_number(noise, "noise", low=0.0)
    mean = x_tr.mean(dim=(0, 2, 3))  # (C,): the "mean" fill
    g_fill = torch.Generator(device=x_tr.device).manual_seed(seed + 7919)

    def masked(x: Tensor, attr: Tensor, f: float, keep: bool) -> Tensor:
        top = top_pixels(attr, f)
        return fill_removed(x, ~top if keep else top, fill, mean=mean, noise=noise, generator=g_fill)
    modes = [False, True] if kar else [False]
    total = repeats * (1 + len(attributions) * len(fractions) * len(modes))
    bar = tqdm(total=total, desc="ROAR/KAR retraining", disable=not progress)

    def retrain(xa: Tensor, xb: Tensor, r: int) -> Tensor:
        """(N_test,) bool: which masked test digits the freshly trained model gets right."""
        torch.manual_seed(seed + r)
        model = (models.create(arch) if isinstance(arch, str) else arch()).to(x_tr.device)
        config = TrainConfig(method="standard", epochs=epochs, batch_size=batch_size, seed=seed + r)
        fit(model, (xa, y_tr), config, progress=False)
        bar.update(1)
        with torch.no_grad(), eval_mode(model):
            right = torch.cat([model(xb[i:i + 500]).argmax(1) == y_te[i:i + 500] for i in range(0, len(y_te), 500)])
        return right.cpu()

    unmasked = torch.stack([retrain(x_tr, x_te, r) for r in range(repeats)]).double().mean(1)
    out: dict[bool, dict[str, Tensor]] = {False: {}, True: {}}
    for name, (a_tr, a_te) in attributions.items():
        for keep in modes:
            right = torch.zeros(repeats, len(fractions), y_te.shape[0], dtype=torch.bool)
            for j, f in enumerate(fractions):
                xa, xb = masked(x_tr, a_tr, f, keep), masked(x_te, a_te, f, keep)
                for r in range(repeats):
                    right[r, j] = retrain(xa, xb, r)
            out[keep][name] = right
    bar.close()
    accuracy = lambda d: {k: v.double().mean(2).float() for k, v in d.items()}  # noqa: E731
    return RoarKarResult(tuple(fractions), accuracy(out[False]), accuracy(out[True]), unmasked.float(), epochs,
                         out[False], out[True])


def roar_kar_scores(result: RoarKarResult, baseline: str = "random") -> dict[str, dict[str, float]]:
    """Kim et al.'s scores: the area between a method's curve and the random curve.

    ROAR score = integral over the fractions of (random accuracy - method accuracy): positive
    when removing the method's top pixels hurts more than removing random ones. KAR score =
    integral of (method accuracy - random accuracy): positive when keeping them helps more. Mean
    curves over repeats, trapezoid rule over ``result.fractions``.

    Returns:
        name -> {"roar": score, "kar": score (absent without KAR)} for every method but the baseline.
    """
    if baseline not in result.roar:
        raise ValueError(f"baseline {baseline!r} is not in the result; run roar_kar with include_random=True")
    f = torch.tensor(result.fractions, dtype=torch.float64)
    area = lambda curve: float(torch.trapezoid(curve.double(), f))
    scores = {}
    for name in result.roar:
        if name == baseline:
            continue
        s = {"roar": area(result.roar[baseline].mean(0) - result.roar[name].mean(0))}
        if name in result.kar:
            s["kar"] = area(result.kar[name].mean(0) - result.kar[baseline].mean(0))
        scores[name] = s
    return scores
