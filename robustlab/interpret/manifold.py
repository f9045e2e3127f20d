"""Manifold distance (Kim, Seo & Jeon 2019, section 2.1): how far images lie from a VAE's learned
manifold of the data."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import models
from .._checks import check_images, check_number, eval_mode

__all__ = ["project", "manifold_distance"]


def project(vae: models.VAE, x: Tensor, *, refine_steps: int = 0, lr: float = 0.05) -> Tensor:
    """The closest point to ``x`` on the VAE's learned manifold.

    Starts from ``decode(mu(x))``; with ``refine_steps > 0`` the latent code is then optimised
    (Adam, ``lr``) to minimise ``||decode(z) - x||^2`` per example, which finds a nearer point
    when the encoder is fooled (adversarial images are off the training distribution).

    Returns:
        (N, 1, H, W) projections in [0, 1].
    """
    x = check_images(x)
    check_number(refine_steps, "refine_steps", low=0, integer=True)
    with eval_mode(vae):
        with torch.no_grad():
            z0 = vae.encode(x)[0]
        if refine_steps == 0:
            with torch.no_grad():
                return vae.decode(z0)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(refine_steps):
            # Summed over examples: each code only affects its own term, so this is per example.
            loss = (vae.decode(z) - x).square().flatten(1).sum(1).sum()
            (grad,) = torch.autograd.grad(loss, z)
            z.grad = grad
            opt.step()
        with torch.no_grad():
            return vae.decode(z.detach())


def manifold_distance(vae: models.VAE, x: Tensor, *, refine_steps: int = 0, lr: float = 0.05) -> Tensor:
    """``||x - project(x)||_2`` per example, (N,): how far images lie from the learned manifold."""
    return (x.detach() - project(vae, x, refine_steps=refine_steps, lr=lr)).flatten(1).norm(dim=1)
