"""Claims from Adebayo et al.'s (2018) randomisation sanity check."""

from __future__ import annotations

import torch

from .. import interpret, report, saliency, zoo
from ._core import ROBUST, STANDARD, Claim, make_claim


def claim_robust_maps_insensitive_to_top_layer(*, n: int = 200, root=None, seed: int = 0) -> Claim:
    """Adebayo et al.'s first cascading step: rank correlation (|map|) of the gradient maps with the
    trained ones after randomising only the logit layer, Linf-0.3 model minus standard model,
    paired over digits. Positive: the robust maps respond less to the learned top layer, i.e.
    they do worse on the sanity check there."""
    test = report.eval_set(root=root, n=n)
    rho, steps = {}, {}
    for m in (ROBUST, STANDARD):
        res = interpret.randomization_test(zoo.load(m), test.x, test.y, lambda mm, x, t: saliency.gradient(mm, x, t),
                                           generator=torch.Generator().manual_seed(seed))
        rho[m] = res.spearman_abs[0]
        steps[m] = {"layers": res.layers, "mean_spearman_abs_per_step": [float(r.mean()) for r in res.spearman_abs]}
    return make_claim("robust_maps_insensitive_to_top_layer",
                  "Randomising only the logit layer changes the Linf-0.3 model's gradient maps less than the "
                  "standard model's: on Adebayo et al.'s sanity check the robust maps are the less sensitive "
                  "to what the top of the network learned.",
                  rho[ROBUST] - rho[STANDARD],
                  {"data": test.source, "metric": "Spearman rank correlation of |gradient| with the trained model's",
                   "means": {m: float(r.mean()) for m, r in rho.items()}, "cascade": steps})


def claim_robust_maps_set_by_first_layer(*, n: int = 200, root=None, seed: int = 0) -> Claim:
    """Cascading randomisation stopped one layer short: rank correlation (|map|) of the gradient
    maps with the trained ones once every layer *above the first* is random, Linf-0.3 model minus
    standard model, paired over digits. Positive: the robust model's maps owe more of their
    shape to its first layer alone."""
    test = report.eval_set(root=root, n=n)
    rho = {}
    for m in (ROBUST, STANDARD):
        res = interpret.randomization_test(zoo.load(m), test.x, test.y, lambda mm, x, t: saliency.gradient(mm, x, t),
                                           generator=torch.Generator().manual_seed(seed))
        rho[m] = res.spearman_abs[-2]  # every layer randomised except the first
    return make_claim("robust_maps_set_by_first_layer",
                  "With every layer above the first randomised, the Linf-0.3 model's gradient maps stay closer to "
                  "the trained maps than the standard model's do: their shape comes largely from the first layer.",
                  rho[ROBUST] - rho[STANDARD],
                  {"data": test.source, "metric": "Spearman rank correlation of |gradient| with the trained model's",
                   "means": {m: float(r.mean()) for m, r in rho.items()}})
