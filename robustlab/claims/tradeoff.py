"""Claims about robustness and accuracy (Tsipras et al. 2019)."""

from __future__ import annotations

import torch

from .. import report, zoo
from ._core import ROBUST, Claim, make_claim


def claim_clean_accuracy_falls_with_training_eps(*, n: int | None = None, root=None) -> Claim:
    """Clean accuracy of the PGD model trained at Linf 0.1 minus the one trained at 0.3, per digit."""
    test = report.eval_set(root=root, n=n)
    correct = {}
    for m in ("mnist-pgd-linf-0.1", ROBUST):
        model = zoo.load(m)
        with torch.no_grad():
            correct[m] = torch.cat([(model(test.x[b:b + 1000]).argmax(1) == test.y[b:b + 1000]).double()
                                    for b in range(0, len(test.y), 1000)])
    return make_claim("clean_accuracy_falls_with_training_eps",
                  "Clean accuracy falls as the training eps rises (PGD training at Linf 0.1 vs 0.3).",
                  correct["mnist-pgd-linf-0.1"] - correct[ROBUST],
                  {"data": test.source, "accuracy": {m: float(c.mean()) for m, c in correct.items()}})
