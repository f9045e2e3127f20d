"""Claims on Kim et al.'s two-dimensional toy data."""

from __future__ import annotations

import numpy as np
import torch

from .. import interpret
from ._core import Claim, make_claim


def claim_toy_2d_robust_gradients_follow_data(*, seeds: int = 10, n: int = 600, eps: float = 0.1,
                                              root=None) -> Claim:
    """Kim et al. §2.2 on :func:`~robustlab.interpret.kim_2d_data`: per seed (data, initialisation
    and training order), the mean gradient alignment of an L2-PGD-trained MLP minus a standard
    one's; the interval is a bootstrap over seeds (models retrained)."""
    from ..train import TrainConfig, fit

    diffs, pairs = [], []
    for seed in range(seeds):
        x, y = interpret.kim_2d_data(n, generator=torch.Generator().manual_seed(seed))
        cos = []
        for fields in (dict(method="standard"), dict(method="pgd", norm="l2", eps=eps, steps=10)):
            model = interpret.toy_mlp(seed=seed)
            fit(model, (x, y), TrainConfig(epochs=20, batch_size=50, lr=1e-2, seed=seed, **fields), progress=False)
            cos.append(float(interpret.gradient_alignment_2d(model, x, y).mean()))
        diffs.append(cos[1] - cos[0])
        pairs.append(cos)
    return make_claim("toy_2d_robust_gradients_follow_data",
                  "On data lying along a line in the plane (Kim et al.'s 2-D setting), an adversarially trained "
                  "model's loss gradient points along the data towards the other class more than a standard model's.",
                  np.array(diffs),
                  {"data": f"kim_2d_data, {n} points per seed", "seeds": seeds,
                   "seeds_with_positive_effect": int(sum(d > 0 for d in diffs)),
                   "training": f"20 epochs; PGD L2 eps {eps}",
                   "alignment_per_seed": [{"standard": a, "adversarial": b} for a, b in pairs]})
