"""Checks of the interpretability assignment: ROAR's masking, ROAD's linear imputation and the MoRF
curve of a fixed model."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .compare import as_tensor, fail, unchanged
from .inputs import digits, gen, zoo_model
from .runners import Runner


def _check_mask_top(run: Runner, hidden: bool) -> int:
    from .. import interpret

    g = gen(150)
    cases = [(torch.rand(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g), 0.25, False, 0.0)]
    if hidden:
        cases += [(torch.rand(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g), 0.33, False, 0.5),
                  (torch.rand(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g), 0.1, True, 0.0),
                  (torch.rand(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g), 0.0, False, 0.0),
                  (torch.rand(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g), 1.0, False, 0.3),
                  # Ties (a map with few levels, as a thresholded or flat map has): broken by position.
                  (torch.rand(3, 1, 6, 6, generator=g), torch.randint(0, 3, (3, 1, 6, 6), generator=g).float(), 0.25,
                   False, 0.0),
                  (torch.rand(2, 1, 6, 6, generator=g), torch.zeros(2, 1, 6, 6), 0.3, True, 0.0)]
    for x, attr, fraction, keep, fill in cases:
        copies = (x.clone(), attr.clone())
        got = run(x, attr, fraction, keep=keep, fill=fill)
        unchanged(run.item, copies[0], x, "x")
        unchanged(run.item, copies[1], attr, "attr")
        got = as_tensor(run.item, got, x, "your masked images")
        want = interpret.mask_top(x, attr, fraction, keep=keep, fill=fill)
        if torch.equal(got, want):
            continue
        n, c, h, w = x.shape
        k = round(fraction * h * w)
        changed = (got != x).any(dim=1).flatten(1).sum(1)  # pixels replaced per image
        expected = (want != x).any(dim=1).flatten(1).sum(1)
        mode = "kept" if keep else "replaced"
        if not torch.equal(changed, expected):
            per_image = changed.tolist()
            fail(run.item, f"pixels replaced per image: {per_image}, expected {expected.tolist()} "
                           f"(fraction={fraction:g} of {h * w} pixels: k = round(fraction * H * W) = {k} "
                           f"{mode} in EVERY image, ranked per image, in all channels)")
        # Attributions whose channel-summed |.| orders the pixels in reverse, or by the signed sum.
        score = attr.abs().sum(1, keepdim=True)
        reverse = ((score.max() - score + 1e-6) / c).expand_as(attr)
        signed = attr.sum(1, keepdim=True)
        by_sign = ((signed - signed.min() + 1e-6) / c).expand_as(attr)
        if torch.equal(got, interpret.mask_top(x, reverse, fraction, keep=keep, fill=fill)):
            fail(run.item, "you replaced the LEAST important pixels; ROAR removes the top-ranked ones")
        if torch.equal(got, interpret.mask_top(x, by_sign, fraction, keep=keep, fill=fill)):
            fail(run.item, "rank pixels by |attr| summed over the channels, not by the signed attribution")
        flipped = interpret.mask_top(x.flip(2, 3), attr.flip(2, 3), fraction, keep=keep, fill=fill).flip(2, 3)
        if torch.equal(got, flipped):
            fail(run.item, "equal scores must be broken by position, the top-left pixel first (a stable descending "
                           "sort: torch.sort(..., descending=True, stable=True)); yours takes the bottom-right first")
        if torch.equal(got, interpret.mask_top(x, attr, fraction, keep=not keep, fill=fill)):
            fail(run.item, f"with keep={keep} you should {'keep' if keep else 'replace'} the top pixels and "
                           f"{'replace' if keep else 'keep'} the others")
        fail(run.item, f"{int((got != want).sum())} values differ from the reference "
                       f"(fill={fill:g}: replaced pixels take exactly this value in every channel)")
    return len(cases)


# --- ROAD: noise-free linear imputation, and the MoRF curve of a fixed model -----------------------

def _impute_cases(hidden: bool) -> list[tuple[Tensor, Tensor]]:
    g = gen(160)
    x = torch.rand(3, 1, 6, 6, generator=g)
    removed = torch.rand(3, 1, 6, 6, generator=g) < 0.3  # some on the border, some in runs
    removed[:, :, 0, 0] = True  # a corner: three neighbours inside the image
    cases = [(x, removed)]
    if hidden:
        digits_x, _ = digits(4, 161)
        block = torch.zeros(4, 1, 28, 28, dtype=torch.bool)
        block[:, :, 8:20, 8:20] = True  # a large hole: the removed pixels depend on each other
        cases += [(digits_x, block),
                  (torch.rand(2, 3, 5, 7, generator=g), torch.rand(2, 1, 5, 7, generator=g) < 0.5),  # colour, H != W
                  (x, torch.zeros_like(removed))]  # nothing removed
    return cases


def _one_sweep(x: Tensor, removed: Tensor, weights: dict[tuple[int, int], float], normalise: bool = True) -> Tensor:
    """One pass of the weighted neighbour mean with removed pixels at 0 (the unsolved variant),
    or, with ``normalise=False``, the system solved with missing border neighbours counted as 0."""
    n, c, h, w = x.shape
    known = (~removed).to(x.dtype).expand_as(x)
    total, weight = torch.zeros_like(x), torch.zeros(n, 1, h, w, dtype=x.dtype)
    padded = torch.nn.functional.pad(x * known, (1, 1, 1, 1))
    inside = torch.nn.functional.pad(torch.ones(n, 1, h, w, dtype=x.dtype), (1, 1, 1, 1))
    for (di, dj), wt in weights.items():
        total += wt * padded[:, :, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
        weight += wt * (inside[:, :, 1 + di:1 + di + h, 1 + dj:1 + dj + w] if normalise else 1.0)
    return torch.where(removed.expand_as(x), total / weight, x)


def _check_linear_impute(run: Runner, hidden: bool) -> int:
    from ..interpret import noisy_linear_impute
    from ..interpret.road import NEIGHBOUR_WEIGHTS

    cases = _impute_cases(hidden)
    for x, removed in cases:
        copies = x.clone(), removed.clone()
        got = run(x, removed)
        unchanged(run.item, copies[0], x, "x")
        unchanged(run.item, copies[1], removed, "removed")
        got = as_tensor(run.item, got, x, "your imputed images")
        kept = (~removed).expand_as(x)
        if not torch.equal(got[kept], x[kept]):
            fail(run.item, f"{int((got[kept] != x[kept]).sum())} kept pixels changed: only the removed pixels get "
                           "new values")
        want = noisy_linear_impute(x, removed, noise=0.0)
        if torch.allclose(got, want, atol=1e-4):
            continue
        weights = dict(NEIGHBOUR_WEIGHTS)
        if torch.allclose(got, _one_sweep(x, removed, weights), atol=1e-4):
            fail(run.item, "each removed pixel took the weighted mean of its neighbours once, with removed "
                           "neighbours counted as 0; the removed pixels depend on each other: solve for all of them "
                           "at once (a sparse linear system, or iterate until nothing changes)")
        area = removed.expand_as(x)
        if torch.allclose(got[area], x.masked_fill(area, 0).sum((2, 3), keepdim=True).div(
                kept.sum((2, 3), keepdim=True).clamp_min(1)).expand_as(x)[area], atol=1e-4):
            fail(run.item, "you filled the removed pixels with the image's mean: ROAD imputes each from its "
                           "neighbours (weights 1/6 direct, 1/12 diagonal), solved jointly")
        bad, worst = int(((got - want).abs() > 1e-4).sum()), (got - want).abs().max().item()
        fail(run.item, f"{bad} imputed values differ from the reference by up to {worst:.3g}: "
                       "every removed pixel must equal the weighted mean of its neighbours inside the image "
                       "(direct 1/6, diagonal 1/12, divided by the weights of the neighbours that exist, so a "
                       "border pixel averages over fewer), kept pixels fixed")
    return len(cases)


def _morf_cases(hidden: bool) -> list[tuple[nn.Module, Tensor, Tensor, Tensor, list[float]]]:
    from ..testing import LinearMulti

    g = gen(170)
    model = LinearMulti(torch.randn(4, 1, 6, 6, generator=g), torch.zeros(4)).eval()
    x = torch.rand(12, 1, 6, 6, generator=g)
    y = model(x).argmax(1)
    attr = torch.randn(12, 1, 6, 6, generator=g)
    cases = [(model, x, y, attr, [0.0, 0.3, 0.6])]
    if hidden:
        standard = zoo_model("mnist-standard")
        digits_x, digits_y = digits(24, 171)
        # A model that reads one pixel, the 11th in rank: 0.3 * 36 = 10.8 pixels removed means 11.
        weight = torch.zeros(2, 1, 6, 6)
        weight[0, 0, 1, 4] = 10.0
        reader = LinearMulti(weight, torch.tensor([0.0, 5.0])).eval()
        one = torch.zeros(1, 1, 6, 6)
        one[0, 0, 1, 4] = 1.0
        ranked = torch.arange(36.0, 0.0, -1.0).view(1, 1, 6, 6)
        cases += [(standard, digits_x, digits_y, digits_x.clone(), [0.1, 0.3]),  # the image control: ties
                  (model, x, y, -attr, [0.25, 0.5, 1.0]),
                  (reader, one, torch.tensor([0]), ranked, [0.3])]
    return cases


def _check_road_morf(run: Runner, hidden: bool) -> int:
    from ..interpret import noisy_linear_impute, road
    from ..interpret._common import top_pixels

    for model, x, y, attr, fractions in _morf_cases(hidden):
        copies = x.clone(), attr.clone()
        got = run(model, x, y, attr, list(fractions))
        unchanged(run.item, copies[0], x, "x")
        unchanged(run.item, copies[1], attr, "attr")
        try:
            got = torch.as_tensor(got, dtype=torch.float64).detach().flatten()
        except (TypeError, ValueError, RuntimeError):
            fail(run.item, f"return one accuracy per fraction, got {type(got).__name__}")
        if got.shape != (len(fractions),):
            fail(run.item, f"return one accuracy per fraction ({len(fractions)}), got {tuple(got.shape)}")

        def curve(a: Tensor, order: str = "morf") -> Tensor:
            result = road(model, x, y, {"a": a}, fractions=fractions, orders=(order,), noise=0.0)
            return getattr(result, order)["a"][0]

        def variant(removed_at, zero: bool = False) -> Tensor:
            accuracies = []
            for f in fractions:
                removed = removed_at(f)
                images = x.masked_fill(removed, 0.0) if zero else noisy_linear_impute(x, removed, noise=0.0)
                with torch.no_grad():
                    accuracies.append(model(images).argmax(1).eq(y).double().mean())
            return torch.stack(accuracies)

        want = curve(attr)
        if torch.allclose(got, want, atol=1e-6):
            continue
        where = f"for fractions {fractions} you returned {[round(v, 4) for v in got.tolist()]}, expected " \
                f"{[round(v, 4) for v in want.tolist()]}"
        pixels = x.shape[2] * x.shape[3]
        if torch.allclose(got, variant(lambda f: top_pixels(attr, math.floor(f * pixels) / pixels)), atol=1e-6):
            fail(run.item, f"{where}: you removed floor(f * H * W) pixels; remove round(f * H * W)")
        if torch.allclose(got, curve(attr, "lerf"), atol=1e-6):
            fail(run.item, f"{where}: you removed the LEAST relevant pixels (LeRF); MoRF removes the top-ranked ones")
        if torch.allclose(got, curve(attr.sum(1, keepdim=True) - attr.sum(1, keepdim=True).min() + 1e-6), atol=1e-6):
            fail(run.item, f"{where}: rank pixels by |attr| summed over the channels, not by the signed attribution")
        if torch.allclose(got, variant(lambda f: top_pixels(attr, f), zero=True), atol=1e-6):
            fail(run.item, f"{where}: you filled the removed pixels with 0; ROAD imputes them from their neighbours "
                           "(your linear_impute), so the silhouette of what was removed does not give it away")
        if torch.allclose(got, variant(lambda f: top_pixels(attr.flip(2, 3), f).flip(2, 3)), atol=1e-6):
            fail(run.item, f"{where}: equal scores must be broken by position, the top-left pixel first (a stable "
                           "descending sort); yours takes the bottom-right first")
        fail(run.item, f"{where}: per fraction f, remove the round(f * H * W) pixels with the largest sum over "
                       "channels of |attr| (ties: the earlier pixel first, a stable sort), impute them with your "
                       "linear_impute, and count the images the model still classifies as y")
    return len(_morf_cases(hidden))
