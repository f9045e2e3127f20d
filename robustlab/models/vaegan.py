"""A VAE trained as a VAE-GAN (Larsen et al. 2016): the manifold model Kim, Seo & Jeon (2019)
project onto.

A plain VAE's Bernoulli likelihood rewards blurry reconstructions; a VAE-GAN adds a
discriminator, measures reconstruction partly in the discriminator's feature space and trains
the decoder to fool it, so that decoded images are sharper. (Whether its manifold then lies
nearer the data in L2 is measured, not assumed: see the zoo card of ``mnist-vaegan``.)
The discriminator is a training device only: :func:`train_vaegan` returns the encoder and decoder
as a :class:`~robustlab.models.VAE`, so :func:`robustlab.interpret.project` and the zoo treat
both manifold models alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_images, check_number
from .vae import VAE

__all__ = ["Discriminator", "vaegan_losses", "vaegan_step", "train_vaegan"]


class Discriminator(nn.Module):
    """A fully connected real/fake critic whose hidden layer doubles as a feature space.

    Args:
        hidden: width of the first hidden layer (the second is half of it).
        size: image height and width.
    """

    def __init__(self, hidden: int = 512, size: int = 28):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(size * size, hidden), nn.LeakyReLU(0.2),
                                      nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden // 2, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 1, H, W) in [0, 1] -> (features (N, hidden // 2), real-vs-fake logits (N,))."""
        f = self.features(x)
        return f, self.head(f).squeeze(1)


def vaegan_losses(vae: VAE, disc: Discriminator, x: Tensor, *, gamma: float = 1.0, adv_weight: float = 1.0,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The two objectives of one VAE-GAN step on a batch, each a per-example mean.

    The VAE's loss is Bernoulli reconstruction + KL (the negative ELBO of :func:`vae_loss`) +
    ``gamma`` x the squared distance between the discriminator's features of the image and of its
    reconstruction (Larsen et al.'s learned similarity) + ``adv_weight`` x the non-saturating GAN
    loss on reconstructions and on decoded prior samples. (Two departures from Larsen et al.: the
    pixel term is kept, so that a short CPU run cannot drift from the data while the critic is
    still weak, and the adversarial term also reaches the encoder.) With ``gamma = adv_weight = 0``
    the VAE's loss is exactly :func:`vae_loss` for the same generator state. The discriminator's
    loss is the binary cross-entropy of real against both kinds of fake, the fakes detached.

    Returns:
        ``(vae_loss, disc_loss, stats)``, ``stats`` detached scalar tensors (``neg_elbo``,
        ``feature``, ``disc_accuracy``). ``disc_loss`` sends no gradient to the VAE, but
        ``vae_loss`` does reach the discriminator's weights (through its features): step each
        player on its own parameters only, as :func:`vaegan_step` does.
    """
    mu, logvar = vae.encode(x)
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + noise * (0.5 * logvar).exp()
    rec_logits = vae.decode_logits(z)
    rec = torch.sigmoid(rec_logits)
    prior = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    fake = vae.decode(prior)

    pixel = F.binary_cross_entropy_with_logits(rec_logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
    f_real, d_real = disc(x)
    f_rec, d_rec = disc(rec)
    _, d_fake = disc(fake)
    feature = (f_rec - f_real.detach()).square().sum(1)
    ones = torch.ones_like(d_rec)
    adv = F.binary_cross_entropy_with_logits(d_rec, ones) + F.binary_cross_entropy_with_logits(d_fake, ones)
    vae_total = (pixel + kl + gamma * feature).mean() + adv_weight * adv

    _, d_rec_det = disc(rec.detach())
    _, d_fake_det = disc(fake.detach())
    disc_total = (F.binary_cross_entropy_with_logits(d_real, ones)
                  + 0.5 * F.binary_cross_entropy_with_logits(d_rec_det, torch.zeros_like(d_rec_det))
                  + 0.5 * F.binary_cross_entropy_with_logits(d_fake_det, torch.zeros_like(d_fake_det)))
    with torch.no_grad():
        real_right = (d_real > 0).float().mean()
        fake_right = 0.5 * ((d_rec_det < 0).float().mean() + (d_fake_det < 0).float().mean())
    stats = {"neg_elbo": (pixel + kl).detach().mean(), "feature": feature.detach().mean(),
             "disc_accuracy": 0.5 * (real_right + fake_right)}
    return vae_total, disc_total, stats


def vaegan_step(vae: VAE, disc: Discriminator, opt_vae: torch.optim.Optimizer, opt_disc: torch.optim.Optimizer,
                x: Tensor, *, gamma: float = 1.0, adv_weight: float = 1.0,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """One simultaneous step of both players on a batch: each optimiser moves its own player by
    the gradient of that player's own loss only (the VAE's loss would otherwise also move the
    critic, through the features it reads). Returns the batch's detached stats."""
    vae_total, disc_total, stats = vaegan_losses(vae, disc, x, gamma=gamma, adv_weight=adv_weight,
                                                 generator=generator)
    vae_params, disc_params = list(vae.parameters()), list(disc.parameters())
    vae_grads = torch.autograd.grad(vae_total, vae_params, retain_graph=True)
    disc_grads = torch.autograd.grad(disc_total, disc_params)
    for p, grad in zip(vae_params + disc_params, vae_grads + disc_grads):
        p.grad = grad
    opt_vae.step()
    opt_disc.step()
    return stats


def train_vaegan(x: Tensor, *, latent: int = 16, hidden: int = 512, epochs: int = 20, batch_size: int = 128,
                 lr: float = 1e-3, disc_lr: float = 2e-4, gamma: float = 1.0, adv_weight: float = 1.0, seed: int = 0,
                 progress: bool = True) -> tuple[VAE, list[dict]]:
    """Trains a VAE with the VAE-GAN objective of :func:`vaegan_losses`; reproducible for a seed.

    Args:
        x: training images, (N, 1, H, W) in [0, 1].
        latent, hidden: the :class:`VAE`'s latent size and width (the critic has the same width).
        epochs, batch_size: passes over ``x`` and examples per step.
        lr, disc_lr: Adam learning rates of the VAE and of the discriminator.
        gamma: weight of the feature-space reconstruction term.
        adv_weight: weight of the generator's adversarial term.
        seed: seeds the initialisation, the shuffling and the sampling.
        progress: show a tqdm bar over epochs.

    Returns:
        (the VAE in eval mode, per-epoch history: mean negative ELBO, feature distance and the
        discriminator's accuracy on real against fake).
    """
    x = check_images(x)
    if x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise ValueError(f"x must be square grey images (N, 1, S, S), got shape {tuple(x.shape)}; "
                         f"convert colour images to one channel and crop or pad to a square")
    check_number(epochs, "epochs", low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    check_number(hidden, "hidden", low=2, integer=True)
    check_number(latent, "latent", low=1, integer=True)
    for value, name in ((lr, "lr"), (disc_lr, "disc_lr")):
        if not value > 0:
            raise ValueError(f"{name} must be a positive learning rate, got {value}; try 1e-3 (lr) or 2e-4 (disc_lr)")
    for value, name in ((gamma, "gamma"), (adv_weight, "adv_weight")):
        if not value >= 0:
            raise ValueError(f"{name} is a loss weight and must be >= 0, got {value}; use 0 to switch the term off")
    torch.manual_seed(seed)
    vae = VAE(latent=latent, hidden=hidden, size=x.shape[-1]).to(x.device)
    disc = Discriminator(hidden=hidden, size=x.shape[-1]).to(x.device)
    opt_vae = torch.optim.Adam(vae.parameters(), lr=lr)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=(0.5, 0.999))
    g = torch.Generator(device=x.device).manual_seed(seed)
    history = []
    for epoch in tqdm(range(epochs), desc="VAE-GAN", disable=not progress):
        vae.train()
        disc.train()
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        sums = {k: torch.zeros((), device=x.device) for k in ("neg_elbo", "feature", "disc_accuracy")}
        for b in range(0, x.shape[0], batch_size):
            xb = x[order[b:b + batch_size]]
            stats = vaegan_step(vae, disc, opt_vae, opt_disc, xb, gamma=gamma, adv_weight=adv_weight, generator=g)
            for k in sums:
                sums[k] += stats[k] * xb.shape[0]
        history.append({"epoch": epoch + 1, **{k: float(v) / x.shape[0] for k, v in sums.items()}})
    return vae.eval(), history
