"""Claims about adversarial examples and the data manifold (Kim, Seo & Jeon 2019, section 2.1)."""

from __future__ import annotations

import torch

from .. import attacks, interpret, report, zoo
from ._core import ROBUST, STANDARD, Claim, make_claim


def _nearer_manifold(name: str, manifold: str, *, n: int, eps: float, steps: int, refine_steps: int, root,
                     seed: int) -> Claim:
    """The VAE-manifold distance of the standard model's adversarial examples minus the Linf-0.3
    model's, over the digits that APGD (L2, ``eps``) breaks for both models (same budget), with
    the zoo's manifold model ``manifold`` projecting."""
    test = report.eval_set(root=root, n=n)
    vae = zoo.load(manifold)
    dist, fooled = {}, {}
    for m in (STANDARD, ROBUST):
        model = zoo.load(m)
        x_adv = attacks.apgd(model, test.x, test.y, eps=eps, norm="l2", steps=steps,
                             generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            fooled[m] = model(x_adv).argmax(1) != test.y
        dist[m] = interpret.manifold_distance(vae, x_adv, refine_steps=refine_steps)
    both = fooled[STANDARD] & fooled[ROBUST]
    kind = "VAE-GAN" if zoo.card(manifold)["method"] == "vaegan" else "VAE"
    statement = (f"Adversarial examples of the Linf-0.3 model lie nearer the data manifold ({kind} projection) than "
                 "the standard model's (same digits, same L2 budget).")
    if int(both.sum()) < 2:
        return Claim(name, statement, 0.0, 0.0, 0.0, "inconclusive",
                     {"data": test.source, "manifold": manifold,
                      "reason": f"only {int(both.sum())} digits broken for both models"})
    return make_claim(name, statement, (dist[STANDARD] - dist[ROBUST])[both],
                      {"data": test.source, "manifold": manifold, "attack": f"APGD-CE L2 eps {eps}, {steps} steps",
                       "digits_broken_for_both": int(both.sum()),
                       "success_rate": {m: float(f.double().mean()) for m, f in fooled.items()},
                       "mean_distance_on_common_digits": {m: float(d[both].mean()) for m, d in dist.items()}})


def claim_robust_adversarials_nearer_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                              refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1, on the same digits, projected by the zoo's VAE (``mnist-vae``)."""
    return _nearer_manifold("robust_adversarials_nearer_manifold", "mnist-vae", n=n, eps=eps, steps=steps,
                            refine_steps=refine_steps, root=root, seed=seed)


def claim_robust_adversarials_nearer_vaegan_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                                     refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1 as they measured it, with a VAE-GAN's projection (``mnist-vaegan``): the
    same digits, attacks and budget as :func:`claim_robust_adversarials_nearer_manifold`."""
    return _nearer_manifold("robust_adversarials_nearer_vaegan_manifold", "mnist-vaegan", n=n, eps=eps,
                            steps=steps, refine_steps=refine_steps, root=root, seed=seed)
