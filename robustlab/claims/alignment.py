"""Claims about how loss gradients align with the image (Etmann et al. 2019)."""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch

from .. import attacks, interpret, report, saliency, zoo
from ._core import L2_ROBUST, ROBUST, STANDARD, Claim, bootstrap, make_claim, verdict


def _alignment_claim(name: str, model_name: str, label: str, *, n: int, root) -> Claim:
    test = report.eval_set(root=root, n=n)
    align = {m: interpret.etmann_alignment(saliency.loss_gradient(zoo.load(m), test.x, test.y), test.x)
             for m in (model_name, STANDARD)}
    return make_claim(name,
                  f"The loss gradients of the {label} model align better with the image than the standard model's "
                  "(Etmann et al.'s alignment).",
                  align[model_name] - align[STANDARD],
                  {"data": test.source, "metric": "etmann_alignment of the loss gradient",
                   "means": {m: float(a.mean()) for m, a in align.items()}})


def claim_robust_gradients_align_with_image(*, n: int = 1000, root=None) -> Claim:
    """Etmann et al.'s alignment |<x, g>| / (|x| |g|) of the loss gradient, Linf-0.3 PGD model
    minus standard model, paired over the same digits."""
    return _alignment_claim("robust_gradients_align_with_image", ROBUST, "Linf-0.3 adversarially trained",
                            n=n, root=root)


def claim_l2_robust_gradients_align_with_image(*, n: int = 1000, root=None) -> Claim:
    """The same comparison for the L2-2.0 PGD model."""
    return _alignment_claim("l2_robust_gradients_align_with_image", L2_ROBUST, "L2-2.0 adversarially trained",
                            n=n, root=root)


MADRY_LINF, MADRY_L2 = "mnist-madry-pgd-linf-0.3", "mnist-madry-pgd-l2-2.0"


def claim_madry_linf_gradients_align_with_image(*, n: int = 1000, root=None) -> Claim:
    """Does capacity give the digit-like maps of Tsipras et al.'s figure? The same comparison for
    the Linf-0.3 model of Madry et al.'s architecture (2 conv + 1,024-unit dense layer)."""
    return _alignment_claim("madry_linf_gradients_align_with_image", MADRY_LINF,
                            "Linf-0.3 adversarially trained Madry-architecture", n=n, root=root)


def claim_madry_l2_gradients_align_with_image(*, n: int = 1000, root=None) -> Claim:
    """The same for the L2-2.0 model of Madry et al.'s architecture."""
    return _alignment_claim("madry_l2_gradients_align_with_image", MADRY_L2,
                            "L2-2.0 adversarially trained Madry-architecture", n=n, root=root)


def claim_robust_alignment_beats_random_weights(*, n: int = 1000, root=None, seed: int = 0) -> Claim:
    """The control for alignment: the same architecture with randomised weights (Adebayo et al.),
    whose gradient alignment comes from the architecture alone."""
    test = report.eval_set(root=root, n=n)
    model = zoo.load(ROBUST)
    layers = interpret.sanity.randomizable_layers(model)
    random_model = interpret.randomize_layers(model, layers, generator=torch.Generator().manual_seed(seed))
    trained = interpret.etmann_alignment(saliency.loss_gradient(model, test.x, test.y), test.x)
    control = interpret.etmann_alignment(saliency.loss_gradient(random_model, test.x, test.y), test.x)
    return make_claim("robust_alignment_beats_random_weights",
                  "The Linf-0.3 model's loss gradients align better with the image than those of the same "
                  "network with randomised weights: the alignment comes from training, not from the architecture.",
                  trained - control,
                  {"data": test.source, "metric": "etmann_alignment of the loss gradient",
                   "means": {"trained": float(trained.mean()), "random weights": float(control.mean())}})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(scipy.stats.spearmanr(a, b).statistic)


STATEMENT_DISTANCE = ("The farther a digit lies from the standard model's decision boundary (L2), the better the "
                      "model's logit gradient aligns with the image (Etmann et al.).")


def claim_alignment_grows_with_boundary_distance(*, n: int = 500, steps: int = 200, root=None) -> Claim:
    """Etmann et al. (2019): across digits, the alignment of the logit gradient with the image
    rises with the digit's L2 distance to the decision boundary (FMN's minimal perturbation).
    Effect: the Spearman correlation over the digits the standard model classifies correctly
    (bootstrap over digits); the L2- and Linf-trained models' correlations are in the detail
    (``digits``: those FMN found an adversarial example for; no correlation below 3)."""
    test = report.eval_set(root=root, n=n)
    per_model = {}
    for m in (STANDARD, L2_ROBUST, ROBUST):
        model = zoo.load(m)
        with torch.no_grad():
            right = model(test.x).argmax(1) == test.y
        x, y = test.x[right], test.y[right]
        dist = attacks.fmn(model, x, y, norm="l2", steps=steps).norm
        align = interpret.etmann_alignment(saliency.gradient(model, x, y), x)
        found = torch.isfinite(dist)
        per_model[m] = {"digits": int(found.sum()), "digits_correct": int(right.sum()),
                        "mean_alignment": float(align.mean())}
        if int(found.sum()) >= 3:  # FMN may find few adversarial examples on a masked model
            rho, low, high = bootstrap(_spearman, align[found], dist[found])
            per_model[m].update(spearman=rho, low=low, high=high, median_distance=float(dist[found].median()))
    s = per_model[STANDARD]
    if "spearman" not in s:
        return Claim("alignment_grows_with_boundary_distance", STATEMENT_DISTANCE, 0.0, 0.0, 0.0, "inconclusive",
                     {"data": test.source, "reason": f"FMN found only {s['digits']} adversarial examples",
                      "models": per_model})
    return Claim("alignment_grows_with_boundary_distance",
                 STATEMENT_DISTANCE,
                 s["spearman"], s["low"], s["high"], verdict(s["low"], s["high"]),
                 {"data": test.source, "distance": f"FMN L2, {steps} steps, on correctly classified digits",
                  "metric": "Spearman correlation of etmann_alignment(logit gradient) with the distance",
                  "models": per_model})
