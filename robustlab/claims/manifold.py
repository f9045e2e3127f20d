"""Claims about adversarial examples and the data manifold (Kim, Seo & Jeon 2019, section 2.1)."""

from __future__ import annotations

import torch

from .. import attacks, interpret, report, zoo
from ._core import ROBUST, STANDARD, Claim, make_claim


def claim_robust_adversarials_nearer_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                              refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1, on the same digits: VAE-manifold distance of the standard model's
    adversarial examples minus the Linf-0.3 model's, over the digits that APGD (L2, ``eps``)
    breaks for both models (same budget)."""
    test = report.eval_set(root=root, n=n)
    vae = zoo.load("mnist-vae")
    dist, fooled = {}, {}
    for m in (STANDARD, ROBUST):
        model = zoo.load(m)
        x_adv = attacks.apgd(model, test.x, test.y, eps=eps, norm="l2", steps=steps,
                             generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            fooled[m] = model(x_adv).argmax(1) != test.y
        dist[m] = interpret.manifold_distance(vae, x_adv, refine_steps=refine_steps)
    both = fooled[STANDARD] & fooled[ROBUST]
    statement = ("Adversarial examples of the Linf-0.3 model lie nearer the data manifold than the standard "
                 "model's (same digits, same L2 budget).")
    if int(both.sum()) < 2:
        return Claim("robust_adversarials_nearer_manifold", statement, 0.0, 0.0, 0.0, "inconclusive",
                     {"data": test.source, "reason": f"only {int(both.sum())} digits broken for both models"})
    return make_claim("robust_adversarials_nearer_manifold", statement, (dist[STANDARD] - dist[ROBUST])[both],
                  {"data": test.source, "attack": f"APGD-CE L2 eps {eps}, {steps} steps",
                   "digits_broken_for_both": int(both.sum()),
                   "success_rate": {m: float(f.double().mean()) for m, f in fooled.items()},
                   "mean_distance_on_common_digits": {m: float(d[both].mean()) for m, d in dist.items()}})
