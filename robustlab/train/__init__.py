"""One training loop for standard and robust training.

Methods (``TrainConfig.method``):

- ``"standard"``: cross-entropy on clean images.
- ``"pgd"``: Madry et al. (2018): cross-entropy on PGD-k adversarial examples (Linf or L2).
- ``"fgsm_rs"``: Wong, Rice & Kolter (2020): a random start in the eps-box plus one FGSM step
  of ``alpha = 1.25 eps``, with a cyclic learning rate and a guard against catastrophic
  overfitting (a PGD check after every epoch; on a collapse the previous epoch's weights are
  restored and training stops).
- ``"fgsm"``: plain FGSM adversarial training (Goodfellow et al., 2015), no random start.
- ``"trades"``: Zhang et al. (2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'``
  maximising the KL divergence in the eps-ball.
- ``"gradreg"``: Ross & Doshi-Velez (2018), "double backprop":
  ``CE + lam * ||grad_x CE||_2^2`` per example.
- ``"gaussian"``: Cohen et al. (2019): cross-entropy on ``x + N(0, sigma^2)``, fresh noise
  every batch (no clamping, as in the paper).
- ``"ibp"``: Gowal et al. (2018), interval bound propagation: ``kappa * CE(f(x), y) +
  (1 - kappa) * CE(z_worst, y)`` with ``z_worst`` the interval bound's worst-case margins
  (:func:`robustlab.bounds.worst_case_logits`), after ``warmup_epochs`` of clean training, eps
  and kappa ramped together over ``eps_ramp_epochs`` (kappa from 1 to ``kappa_end``).
- ``"crown_ibp"``: Zhang et al. (2020): as ``"ibp"``, with the worst case taken from
  ``beta * CROWN-IBP + (1 - beta) * IBP`` (:func:`robustlab.bounds.crown_ibp_logits`), beta
  ramped from 1 to 0 with eps.

``fit(..., on_epoch=robust_probe(x_val, y_val, eps=...))`` records held-out clean, FGSM and PGD
accuracy after every epoch (training curves, early stopping with :func:`best_epoch`).

Every epoch's randomness (shuffling, random starts, noise, dropout) is derived from
``(seed, epoch)``, so a run killed and resumed from its last checkpoint ends with the same
weights as an uninterrupted one. Under ``torchrun`` the loop uses DistributedDataParallel: each
process takes its share of every global batch, so the run matches a single process.
"""

from __future__ import annotations

from .config import ADVERSARIAL, CERTIFIED, METHODS, OPTIMIZERS, SCHEDULES, TrainConfig, TrainResult
from .curves import best_epoch, robust_probe
from .loop import evaluate_accuracy, fit
from .losses import random_shift, training_loss

__all__ = ["TrainConfig", "TrainResult", "fit", "training_loss", "METHODS", "evaluate_accuracy",
           "random_shift", "ADVERSARIAL", "CERTIFIED", "SCHEDULES", "OPTIMIZERS", "robust_probe", "best_epoch"]
