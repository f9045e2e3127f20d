"""A variational autoencoder: the learned image manifold of Kim, Seo & Jeon (2019, section 2.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_images, check_number

__all__ = ["VAE", "vae_loss", "train_vae"]


class VAE(nn.Module):
    """A fully connected variational autoencoder for 28x28 grey images (Kingma & Welling, 2014).

    The learned image manifold of Kim, Seo & Jeon (2019, §2.1): ``decode(encode(x).mu)`` projects
    an image onto it. The decoder ends in a sigmoid, so its images lie in [0, 1].

    Args:
        latent: dimension of the latent code.
        hidden: width of the hidden layers.
        size: image height and width.
    """

    def __init__(self, latent: int = 16, hidden: int = 512, size: int = 28):
        super().__init__()
        self.size = size
        d = size * size
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 1, H, W) in [0, 1] -> (mu, logvar), each (N, latent)."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z: Tensor) -> Tensor:
        """(N, latent) -> (N, 1, H, W) pixel logits (before the sigmoid)."""
        return self.decoder(z).view(-1, 1, self.size, self.size)

    def decode(self, z: Tensor) -> Tensor:
        """(N, latent) -> (N, 1, H, W) images in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction from the posterior mean, (N, 1, H, W) in [0, 1]."""
        return self.decode(self.encode(x)[0])


def vae_loss(vae: VAE, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """The negative ELBO per example, averaged: Bernoulli reconstruction + KL to N(0, I)."""
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + eps * (0.5 * logvar).exp()
    rec = F.binary_cross_entropy_with_logits(vae.decode_logits(z), x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
    return (rec + kl).mean()


def train_vae(x: Tensor, *, latent: int = 16, hidden: int = 512, epochs: int = 20, batch_size: int = 128,
              lr: float = 1e-3, seed: int = 0, progress: bool = True) -> tuple[VAE, list[dict]]:
    """Trains a :class:`VAE` on images ``x`` with Adam; reproducible for a seed.

    Returns:
        (the VAE in eval mode, per-epoch history of the mean negative ELBO).
    """
    x = check_images(x)
    check_number(epochs, "epochs", low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    torch.manual_seed(seed)
    vae = VAE(latent=latent, hidden=hidden, size=x.shape[-1]).to(x.device)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    g = torch.Generator(device=x.device).manual_seed(seed)
    history = []
    for epoch in tqdm(range(epochs), desc="VAE", disable=not progress):
        vae.train()
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        total = torch.zeros((), device=x.device)
        for b in range(0, x.shape[0], batch_size):
            xb = x[order[b:b + batch_size]]
            loss = vae_loss(vae, xb, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * xb.shape[0]
        history.append({"epoch": epoch + 1, "neg_elbo": float(total) / x.shape[0]})
    return vae.eval(), history
