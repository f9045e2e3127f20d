"""Checks of the interpretability assignment: ROAR's masking."""

from __future__ import annotations

import torch

from .compare import as_tensor, fail, unchanged
from .inputs import gen
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
