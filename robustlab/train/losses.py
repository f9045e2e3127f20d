"""The per-batch objective of every training method (:func:`training_loss`) and the shift augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import attacks
from .._checks import eval_mode
from .config import ADVERSARIAL, CERTIFIED, TrainConfig

__all__ = ["training_loss", "random_shift"]


def random_shift(x: Tensor, shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translates each image by its own random (dy, dx) in [-shift, shift], filling with 0.

    Args:
        x: images, (N, C, H, W).
        shift: largest translation in pixels, >= 0.
        generator: random source for the offsets (on x's device).

    Returns:
        The translated images, same shape as x.
    """
    if shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, C, H, W)


def _trades_adversary(model: nn.Module, x: Tensor, p_clean: Tensor, eps: float, alpha: float,
                      steps: int, norm: str, generator: torch.Generator) -> Tensor:
    """TRADES' inner maximisation of KL(f(x) || f(x')) over the eps-ball, from x + 0.001 N(0, I)."""
    start = 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = (x + start).clamp(0.0, 1.0)
    for _ in range(steps):
        x_in = x_adv.detach().requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_in), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, x_in)
        x_adv = attacks.pgd_step(x_in.detach(), x, grad, alpha=alpha, eps=eps, norm=norm)
    return x_adv.detach()


def training_loss(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig, *,
                  eps: float | None = None, generator: torch.Generator | None = None,
                  attack_model: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """The method's loss on one batch, and the logits it was computed from.

    Args:
        model: the model being trained (in train mode), maybe wrapped in DDP.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        config: the recipe; ``config.method`` picks the objective.
        eps: the current radius (the ramped one); default ``config.eps``.
        generator: random source for starts and noise.
        attack_model: the unwrapped model for inner attacks (default ``model``).

    Returns:
        ``(loss, logits)``: the scalar mean loss over the batch, and the (N, K) logits on the
        inputs the loss saw (adversarial or noisy ones for the robust methods).
    """
    eps = config.eps if eps is None else eps
    attack_model = model if attack_model is None else attack_model
    method = config.method
    if method in CERTIFIED:
        from ..bounds import crown_ibp_logits, worst_case_logits

        # Gowal et al.: kappa * CE(clean) + (1 - kappa) * CE(worst case of the bound), kappa ramped
        # from 1 to kappa_end as eps grows to config.eps; for crown_ibp (Zhang et al.) the bound is
        # beta * CROWN-IBP + (1 - beta) * IBP with beta ramped from 1 to 0 at the same time.
        progress = eps / config.eps if config.eps else 0.0
        kappa = 1.0 - (1.0 - config.kappa_end) * progress
        logits = model(x)
        loss = kappa * F.cross_entropy(logits, y)
        if eps > 0:
            if method == "ibp":
                worst = worst_case_logits(attack_model, x, y, eps=eps)
            else:
                worst = crown_ibp_logits(attack_model, x, y, eps=eps, beta=1.0 - progress)
            loss = loss + (1.0 - kappa) * F.cross_entropy(worst, y)
        return loss, logits
    if method == "standard" or (method in ADVERSARIAL and eps == 0):
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    if method == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        logits = model(x + config.sigma * noise)
        return F.cross_entropy(logits, y), logits
    if method == "gradreg":
        x_in = x.detach().requires_grad_(True)
        logits = model(x_in)
        ce = F.cross_entropy(logits, y, reduction="none")  # (N,)
        # Per-example input gradients (each CE_i depends on x_i only); create_graph keeps them
        # differentiable so the penalty is trained through ("double backprop").
        (grad,) = torch.autograd.grad(ce.sum(), x_in, create_graph=True)
        penalty = grad.flatten(1).pow(2).sum(dim=1)  # (N,)
        return (ce + config.lam * penalty).mean(), logits
    alpha = config.step_size(eps)
    if method == "trades":
        with torch.no_grad(), eval_mode(attack_model):
            p_clean = F.softmax(attack_model(x), dim=1)
        with eval_mode(attack_model):
            x_adv = _trades_adversary(attack_model, x, p_clean, eps, alpha, config.steps,
                                      config.norm, generator)
        # One forward over both halves: DistributedDataParallel allows one forward per backward.
        logits, logits_adv = model(torch.cat([x, x_adv])).split(x.shape[0])
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(logits, y) + config.beta * robust, logits_adv
    steps = config.steps if method == "pgd" else 1
    x_adv = attacks.pgd(attack_model, x, y, eps=eps, alpha=alpha, steps=steps, norm=config.norm,
                        random_start=method != "fgsm", generator=generator)
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits
