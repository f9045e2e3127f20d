"""Claims about adversarial examples and the data manifold (Kim, Seo & Jeon 2019, section 2.1)."""

from __future__ import annotations

import torch

from .. import attacks, interpret, report, zoo
from ._core import L2_ROBUST, ROBUST, STANDARD, Claim, make_claim

TRADES = "mnist-trades-linf-0.3"
MODELS = (STANDARD, ROBUST, L2_ROBUST, TRADES)
"""The models whose adversarial examples are compared, always on the digits all of them lose."""


def _nearer_manifold(name: str, robust: str, manifold: str, *, n: int, eps: float, steps: int, refine_steps: int,
                     root, seed: int) -> Claim:
    """The manifold distance of the standard model's adversarial examples minus ``robust``'s, over
    the digits that APGD (L2, ``eps``, the same budget for every model) breaks for *every* model
    of :data:`MODELS`, with the zoo's manifold model ``manifold`` projecting. The other models'
    mean distances on those digits are reported beside it."""
    test = report.eval_set(root=root, n=n)
    vae = zoo.load(manifold)
    dist, fooled = {}, {}
    for m in MODELS:
        model = zoo.load(m)
        x_adv = attacks.apgd(model, test.x, test.y, eps=eps, norm="l2", steps=steps,
                             generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            fooled[m] = model(x_adv).argmax(1) != test.y
        dist[m] = interpret.manifold_distance(vae, x_adv, refine_steps=refine_steps)
    common = torch.stack(list(fooled.values())).all(0)
    kind = "VAE-GAN" if zoo.card(manifold)["method"] == "vaegan" else "VAE"
    which = "Linf-0.3" if robust == ROBUST else "L2-2.0"
    statement = (f"Adversarial examples of the {which} model lie nearer the data manifold ({kind} projection) than "
                 "the standard model's (the same digits, broken for every compared model, and the same L2 budget).")
    detail = {"data": test.source, "manifold": manifold, "attack": f"APGD-CE L2 eps {eps}, {steps} steps",
              "models": list(MODELS), "digits_broken_for_all": int(common.sum()),
              "success_rate": {m: float(f.double().mean()) for m, f in fooled.items()}}
    if int(common.sum()) < 2:
        return Claim(name, statement, 0.0, 0.0, 0.0, "inconclusive",
                     {**detail, "reason": f"only {int(common.sum())} digits broken for every model"})
    clean = interpret.manifold_distance(vae, test.x[common], refine_steps=refine_steps)
    return make_claim(name, statement, (dist[STANDARD] - dist[robust])[common],
                      {**detail, "clean_distance_on_common_digits": float(clean.mean()),
                       "mean_distance_on_common_digits": {m: float(d[common].mean()) for m, d in dist.items()}})


def claim_robust_adversarials_nearer_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                              refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1 for the Linf-0.3 model, on the same digits, projected by the zoo's VAE."""
    return _nearer_manifold("robust_adversarials_nearer_manifold", ROBUST, "mnist-vae", n=n, eps=eps, steps=steps,
                            refine_steps=refine_steps, root=root, seed=seed)


def claim_l2_robust_adversarials_nearer_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                                 refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1 for the L2-2.0 model, on the same digits as the Linf-0.3 claim (the VAE)."""
    return _nearer_manifold("l2_robust_adversarials_nearer_manifold", L2_ROBUST, "mnist-vae", n=n, eps=eps,
                            steps=steps, refine_steps=refine_steps, root=root, seed=seed)


def claim_robust_adversarials_nearer_vaegan_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                                     refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1 as they measured it, with a VAE-GAN's projection (``mnist-vaegan``): the
    same digits, attacks and budget as :func:`claim_robust_adversarials_nearer_manifold`."""
    return _nearer_manifold("robust_adversarials_nearer_vaegan_manifold", ROBUST, "mnist-vaegan", n=n, eps=eps,
                            steps=steps, refine_steps=refine_steps, root=root, seed=seed)
