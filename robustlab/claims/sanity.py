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


def claim_robust_maps_changed_most_by_first_layer(*, n: int = 200, root=None, seed: int = 0) -> Claim:
    """Adebayo et al.'s independent randomisation (one layer at a time, the others trained) on the
    Linf-0.3 model: per digit, the rank correlation (|map|) with the trained maps after
    randomising the upper layer that changes them most, minus the one after randomising the
    first convolution alone. Positive: the first layer alone moves the maps more than any single
    upper layer does. The standard model's value is reported beside it (in ``detail``)."""
    test = report.eval_set(root=root, n=n)
    margin, per_layer = {}, {}
    for m in (ROBUST, STANDARD):
        res = interpret.randomization_test(zoo.load(m), test.x, test.y, lambda mm, x, t: saliency.gradient(mm, x, t),
                                           mode="independent", generator=torch.Generator().manual_seed(seed))
        first_layer = dict(zoo.load(m).named_modules())[res.layers[-1]]
        if not isinstance(first_layer, torch.nn.Conv2d):  # randomizable_layers lists them from the logits down
            raise ValueError(f"{m}: the last randomised layer, {res.layers[-1]!r}, is a {type(first_layer).__name__}, "
                             "not the first convolution; this claim needs a network that starts with a Conv2d")
        upper, first = res.spearman_abs[:-1], res.spearman_abs[-1]  # layers from the logits down
        margin[m] = upper.min(0).values - first
        per_layer[m] = {layer: float(r.mean()) for layer, r in zip(res.layers, res.spearman_abs)}
    return make_claim("robust_maps_changed_most_by_first_layer",
                      "Randomised one layer at a time, the Linf-0.3 model's gradient maps change more when the "
                      "first convolution is randomised than when any single upper layer is.",
                      margin[ROBUST],
                      {"data": test.source, "mode": "independent (one layer at a time)",
                       "metric": "Spearman rank correlation of |gradient| with the trained model's",
                       "mean_spearman_abs_per_layer": per_layer,
                       "mean_margin": {m: float(v.mean()) for m, v in margin.items()}})
