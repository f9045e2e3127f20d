"""A VAE trained as a VAE-GAN (Larsen et al. 2016): the manifold model Kim, Seo & Jeon (2019)
project onto.

A plain VAE's Bernoulli likelihood rewards blurry reconstructions; a VAE-GAN adds a
discriminator, measures reconstruction partly in the discriminator's feature space and trains
the decoder to fool it, so decoded images are sharper and the learned manifold nearer the data.
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

__all__ = ["Discriminator", "vaegan_losses", "train_vaegan"]


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
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict[str, float]]:
    """The two objectives of one VAE-GAN step on a batch, each a per-example mean.

    The VAE's loss is Bernoulli reconstruction + KL (the negative ELBO of :func:`vae_loss`) +
    ``gamma`` x the squared distance between the discriminator's features of the image and of its
    reconstruction (Larsen et al.'s learned similarity) + ``adv_weight`` x the non-saturating GAN
    loss on reconstructions and on decoded prior samples. (Larsen et al. drop the pixel term; it is
    kept here so that a short CPU run cannot drift from the data while the critic is still weak.)
    The discriminator's loss is the binary cross-entropy of real against both kinds of fake.

    Returns:
        ``(vae_loss, disc_loss, stats)``; ``vae_loss`` carries no gradient to the discriminator's
        weights through its fakes' labels, but does through its features: step each optimiser on
        its own parameters only (as :func:`train_vaegan` does).
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
    stats = {"neg_elbo": float((pixel + kl).detach().mean()), "feature": float(feature.detach().mean()),
             "disc_accuracy": float(0.5 * (real_right + fake_right))}
    return vae_total, disc_total, stats


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
    check_number(epochs, "epochs", low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    check_number(gamma, "gamma", low=0.0)
    check_number(adv_weight, "adv_weight", low=0.0)
    torch.manual_seed(seed)
    vae = VAE(latent=latent, hidden=hidden, size=x.shape[-1]).to(x.device)
    disc = Discriminator(hidden=hidden, size=x.shape[-1]).to(x.device)
    opt_vae = torch.optim.Adam(vae.parameters(), lr=lr)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=(0.5, 0.999))
    vae_params, disc_params = list(vae.parameters()), list(disc.parameters())
    g = torch.Generator(device=x.device).manual_seed(seed)
    history = []
    for epoch in tqdm(range(epochs), desc="VAE-GAN", disable=not progress):
        vae.train()
        disc.train()
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        sums = {"neg_elbo": 0.0, "feature": 0.0, "disc_accuracy": 0.0}
        for b in range(0, x.shape[0], batch_size):
            xb = x[order[b:b + batch_size]]
            vae_total, disc_total, stats = vaegan_losses(vae, disc, xb, gamma=gamma, adv_weight=adv_weight,
                                                         generator=g)
            # Each player steps on its own parameters only: the VAE's loss would otherwise also
            # move the critic (through the features it reads), and the critic's the decoder.
            vae_grads = torch.autograd.grad(vae_total, vae_params, retain_graph=True)
            disc_grads = torch.autograd.grad(disc_total, disc_params)
            for p, grad in zip(vae_params, vae_grads):
                p.grad = grad
            for p, grad in zip(disc_params, disc_grads):
                p.grad = grad
            opt_vae.step()
            opt_disc.step()
            for k in sums:
                sums[k] += stats[k] * xb.shape[0]
        history.append({"epoch": epoch + 1, **{k: v / x.shape[0] for k, v in sums.items()}})
    return vae.eval(), history
