"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022).

Removing pixels to test an attribution leaks: the *shape* of what was removed is visible in the
modified image (a grey or black silhouette where the ink was), and a retrained model, or even
the original one, can read the class from the silhouette instead of from the remaining pixels.
Rong et al. fill the removed pixels by *noisy linear imputation*: each removed pixel takes the
weighted mean of its eight neighbours (direct neighbours weight 1/6, diagonal ones 1/12), the
removed pixels solved jointly as one sparse linear system with the kept pixels fixed, plus a
little Gaussian noise. The fill then follows the surrounding image and says little about which
pixels were removed.

Two orders: MoRF (most relevant first) removes the top-ranked pixels, and accuracy should fall
fast for a faithful ranking; LeRF (least relevant first) removes the bottom-ranked ones, and
accuracy should stay high. ``road`` evaluates a fixed model (no retraining); ``roar_kar(...,
fill="impute")`` in :mod:`robustlab.interpret.roar` is the retrained variant (ROAR = MoRF; KAR
keeping a fraction f = LeRF removing 1 - f).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import splu
from torch import Tensor, nn

from .._checks import check_choice, check_generator, check_images, check_labels, check_number, eval_mode
from ._common import FRACTIONS, check_attr, check_removed, top_pixels

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute", "ORDERS", "RoadResult", "road", "road_scores",
           "road_gap_per_image"]

NEIGHBOUR_WEIGHTS = (((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
                     ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12))
"""(row offset, column offset) -> weight of each neighbour in the imputation (Rong et al.)."""

ORDERS = ("morf", "lerf")

_ANCHOR = 1e-6  # pulls a removed region with no kept neighbour anywhere to the image's kept mean


def noisy_linear_impute(x: Tensor, removed: Tensor, *, noise: float = 0.01,
                        generator: torch.Generator | None = None) -> Tensor:
    """Fills the ``removed`` pixels of ``x`` by noisy linear imputation (Rong et al. 2022).

    Every removed pixel i gets the value with ``sum_j w_ij (v_i - v_j) = 0`` over its neighbours
    j inside the image (:data:`NEIGHBOUR_WEIGHTS`; at borders the missing neighbours drop out,
    which renormalises the weights), kept pixels fixed at their values: one sparse linear system
    for the whole batch, solved per channel. Then ``noise`` times standard Gaussian noise is
    added to the imputed pixels and the result clipped to [0, 1]. A removed region that touches
    no kept pixel (e.g. everything removed) takes the mean of the image's kept pixels (0 when
    none is kept).

    Args:
        x: images, (N, C, H, W), in [0, 1].
        removed: (N, H, W) or (N, 1, H, W) bool, True where a pixel is removed (all channels).
        noise: standard deviation of the added noise, in pixel units, >= 0.
        generator: random source of the noise.

    Returns:
        (N, C, H, W) images; kept pixels are exactly ``x``'s, ``x`` is not changed.
    """
    x = check_images(x)
    check_number(noise, "noise", low=0.0)
    check_generator(generator, x)
    n, c, h, w = x.shape
    rem = check_removed(removed, x).reshape(n, h, w).cpu().numpy()
    out = x.detach().clone()
    # The noise is drawn for every pixel of the batch and used where pixels are removed, so an
    # image's result does not depend on which other images share its batch.
    draw = noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if noise > 0 else None
    if not rem.any():
        return out
    vals = x.detach().double().cpu().numpy()  # (N, C, H, W)
    idx = np.flatnonzero(rem)  # flat (n, i, j) indices of the unknowns
    pos = np.full(n * h * w, -1, dtype=np.int64)
    pos[idx] = np.arange(idx.size)
    ni, ii, jj = np.unravel_index(idx, (n, h, w))
    diag = np.zeros(idx.size)
    rows, cols, data = [], [], []
    rhs = np.zeros((idx.size, c))
    for (di, dj), wt in NEIGHBOUR_WEIGHTS:
        qi, qj = ii + di, jj + dj
        inside = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)
        diag[inside] += wt
        p = np.flatnonzero(inside)
        q = np.ravel_multi_index((ni[p], qi[p], qj[p]), (n, h, w))
        unknown = rem.reshape(-1)[q]
        rows.append(p[unknown])
        cols.append(pos[q[unknown]])
        data.append(np.full(int(unknown.sum()), -wt))
        known = p[~unknown]
        rhs[known] += wt * vals[ni[known], :, qi[known], qj[known]]
    # The anchor: a tiny pull of every unknown towards its image's kept mean. It changes a
    # solvable system's answer by about 1e-6 and makes a region with no kept neighbour solvable.
    kept = ~rem
    count = kept.reshape(n, -1).sum(1)
    mean = np.where(count[:, None] > 0, (vals * kept[:, None]).reshape(n, c, -1).sum(2) / np.maximum(count, 1)[:, None],
                    0.0)  # (N, C)
    diag += _ANCHOR
    rhs += _ANCHOR * mean[ni]
    rows.append(np.arange(idx.size))
    cols.append(np.arange(idx.size))
    data.append(diag)
    a = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(idx.size, idx.size)).tocsc()
    sol = splu(a).solve(rhs)  # (U, C)
    filled = torch.as_tensor(sol, dtype=x.dtype, device=x.device)  # (U, C)
    ni_t, ii_t, jj_t = (torch.as_tensor(arr, device=x.device) for arr in (ni, ii, jj))
    if draw is not None:
        filled = filled + draw[ni_t, :, ii_t, jj_t]
    out[ni_t, :, ii_t, jj_t] = filled.clamp(0.0, 1.0)
    return out


class RoadResult(NamedTuple):
    """Accuracy of a fixed model on images whose ranked pixels were removed and imputed.

    Attributes:
        fractions: the fractions of pixels removed.
        morf: name -> (repeats, len(fractions)) accuracies, most relevant pixels removed first.
        lerf: name -> (repeats, len(fractions)) accuracies, least relevant pixels removed first.
        clean: accuracy on the unmodified images.
        noise: the imputation noise.
        morf_correct: name -> (repeats, len(fractions), N) bool, per image whether the model
            still classifies it correctly (for intervals over images; :func:`road_gap_per_image`).
        lerf_correct: the same for LeRF.
    """

    fractions: tuple[float, ...]
    morf: dict[str, Tensor]
    lerf: dict[str, Tensor]
    clean: float
    noise: float
    morf_correct: dict[str, Tensor] = {}
    lerf_correct: dict[str, Tensor] = {}


def road(model: nn.Module, x: Tensor, y: Tensor, attributions: Mapping[str, Tensor], *,
         fractions: Sequence[float] = FRACTIONS, orders: Sequence[str] = ORDERS, noise: float = 0.01,
         repeats: int = 1, seed: int = 0, batch_size: int = 500) -> RoadResult:
    """ROAD without retraining: the model's accuracy as ranked pixels are removed and imputed.

    For every attribution, fraction and order the removed pixels are filled by
    :func:`noisy_linear_impute` and the (fixed) model is evaluated; ``repeats`` draws of the
    imputation noise (seeds ``seed + r``) give the spread. A faithful ranking makes the MoRF curve
    fall fast and keeps the LeRF curve high.

    Args:
        model: the classifier whose attributions are tested.
        x: images, (N, C, H, W), in [0, 1].
        y: labels, (N,).
        attributions: name -> attribution of ``x``, (N, C, H, W) (pass the controls of
            :mod:`robustlab.interpret.controls` beside the maps).
        fractions: fractions of pixels removed, each in [0, 1].
        orders: any of ``"morf"``, ``"lerf"``.
        noise: imputation noise (pixel units).
        repeats: noise draws per point.
        seed: base seed of the noise.
        batch_size: images imputed and evaluated at once.

    Returns:
        :class:`RoadResult` (orders not asked for are empty dicts).
    """
    x = check_images(x)
    y = check_labels(y, x)
    check_number(repeats, "repeats", low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    for order in orders:
        check_choice(order, "order", ORDERS)
    for f in fractions:
        check_number(f, "fraction", low=0.0)
        if f > 1:
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
    attributions = {name: check_attr(a, x, f"attributions[{name!r}]") for name, a in attributions.items()}

    def correct(images: Tensor) -> Tensor:
        with torch.no_grad(), eval_mode(model):
            return (model(images).argmax(1) == y).cpu()

    clean = float(correct(x).double().mean())
    out: dict[str, dict[str, Tensor]] = {"morf": {}, "lerf": {}}
    for order in orders:
        for name, attr in attributions.items():
            right = torch.zeros(repeats, len(fractions), x.shape[0], dtype=torch.bool)
            for j, f in enumerate(fractions):
                # LeRF removing f = keeping the top 1 - f.
                removed = top_pixels(attr, f) if order == "morf" else ~top_pixels(attr, 1.0 - f)
                for r in range(repeats):
                    g = torch.Generator(device=x.device).manual_seed(seed + r)
                    imputed = torch.cat([noisy_linear_impute(x[b:b + batch_size], removed[b:b + batch_size],
                                                             noise=noise, generator=g)
                                         for b in range(0, x.shape[0], batch_size)])
                    right[r, j] = correct(imputed)
            out[order][name] = right
    accuracy = {o: {k: v.double().mean(2) for k, v in d.items()} for o, d in out.items()}
    return RoadResult(tuple(float(f) for f in fractions), accuracy["morf"], accuracy["lerf"], clean, float(noise),
                      out["morf"], out["lerf"])


def road_gap_per_image(result: RoadResult, *, per_draw: bool = False) -> dict[str, Tensor]:
    """Per attribution, (N,) the LeRF area minus the MoRF area of each image's correctness
    (averaged over the noise draws; trapezoid rule over the fractions, divided by their span):
    its mean is ``road_scores(result)[name]["gap"]``, and a bootstrap over images gives an interval.
    With ``per_draw``, (repeats, N): one row per draw of the imputation noise (their mean over
    rows is the default), for an interval over draws and images together.
    """
    if not result.morf_correct or not result.lerf_correct:
        raise ValueError("road_gap_per_image needs a RoadResult of both orders with per-image correctness: "
                         "run road(..., orders=('morf', 'lerf'))")
    f = torch.tensor(result.fractions, dtype=torch.float64)
    if len(f) < 2 or not bool((f[1:] > f[:-1]).all()):
        raise ValueError(f"road_gap_per_image needs at least two increasing fractions, got {result.fractions}; "
                         "run road with sorted fractions")
    span = float(f[-1] - f[0])

    def area(right: Tensor) -> Tensor:  # (repeats, F, N) -> (repeats, N), or (N,) averaged over draws
        per = torch.trapezoid(right.double().transpose(1, 2), f, dim=2) / span
        return per if per_draw else per.mean(0)

    return {name: area(result.lerf_correct[name]) - area(result.morf_correct[name]) for name in result.morf_correct
            if name in result.lerf_correct}


def road_scores(result: RoadResult) -> dict[str, dict[str, float]]:
    """Per attribution, the mean area under each curve (trapezoid rule over the fractions,
    divided by their span) and ``gap = LeRF area - MoRF area``: larger is more faithful.

    Returns:
        name -> {"morf": area, "lerf": area, "gap": difference} with the keys of the orders run.
    """
    f = torch.tensor(result.fractions, dtype=torch.float64)
    if len(f) > 1 and not bool((f[1:] > f[:-1]).all()):
        raise ValueError(f"road_scores needs increasing fractions, got {result.fractions}; "
                         "run road with sorted fractions")
    span = float(f[-1] - f[0]) if len(f) > 1 else 1.0

    def area(curve: Tensor) -> float:
        return float(torch.trapezoid(curve.double().mean(0), f)) / span if len(f) > 1 else float(curve.mean())

    scores: dict[str, dict[str, float]] = {}
    for order in ORDERS:
        for name, curve in getattr(result, order).items():
            scores.setdefault(name, {})[order] = area(curve)
    for s in scores.values():
        if "morf" in s and "lerf" in s:
            s["gap"] = s["lerf"] - s["morf"]
    return scores
