"""Models that take images in [0, 1]: normalisation is their first layer.

Keeping ``Normalize`` inside the model means that ``eps``, ``sigma`` and certified radii are
always in pixel units, whatever statistics the model was trained with (the lesson of Cohen et
al.'s NormalizeLayer).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._checks import check_images, check_number
from .data import MEAN, STD

__all__ = ["Normalize", "MadryCNN", "SmallCNN", "WideCNN", "MLP", "PreActResNet18", "VAE", "vae_loss", "train_vae",
           "ARCHITECTURES", "create"]


class Normalize(nn.Module):
    """Per-channel standardisation ``(x - mean) / std``, the first layer of every model.

    ``mean`` and ``std`` are buffers, so they move with ``.to(device)`` and are saved with the
    weights.

    Args:
        mean: one value per channel.
        std: one positive value per channel.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std need one value per channel each, got "
                             f"{mean_t.numel()} and {std_t.numel()} values")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    @classmethod
    def for_dataset(cls, name: str) -> "Normalize":
        """The layer with the training-split statistics of ``"mnist"``, ``"fashion-mnist"`` or
        ``"cifar10"``."""
        if name not in MEAN:
            raise ValueError(f"unknown dataset {name!r}; valid values are {', '.join(map(repr, MEAN))}")
        return cls(MEAN[name], STD[name])

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, C, H, W) standardised images."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class MadryCNN(nn.Sequential):
    """The MNIST network of Madry et al. (2018): two 5x5 conv layers (32, 64 channels), each
    followed by ReLU and 2x2 max-pooling, then fully connected 1024 -> ReLU -> 10.

    Args:
        num_classes: number of logits.
        dataset: whose statistics the leading ``Normalize`` uses (28x28 grey images).
    """

    def __init__(self, num_classes: int = 10, dataset: str = "mnist"):
        super().__init__(
            Normalize.for_dataset(dataset),
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 1024), nn.ReLU(),
            nn.Linear(1024, num_classes),
        )


class SmallCNN(nn.Sequential):
    """The small, fast MNIST network of Wong, Rice & Kolter (2020): two 4x4 stride-2 conv
    layers (16, 32 channels) with ReLU, then fully connected 100 -> ReLU -> 10.

    Args:
        num_classes: number of logits.
        dataset: whose statistics the leading ``Normalize`` uses (28x28 grey images).
        channels: output channels of the two conv layers.
        hidden: width of the hidden dense layer.
    """

    def __init__(self, num_classes: int = 10, dataset: str = "mnist", channels: tuple[int, int] = (16, 32),
                 hidden: int = 100):
        c1, c2 = channels
        super().__init__(
            Normalize.for_dataset(dataset),
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


class WideCNN(SmallCNN):
    """:class:`SmallCNN` twice as wide in its convolutions (32, 64 channels) and with 512 hidden
    units (1.6 M parameters against 0.17 M): the zoo's certified-training (IBP) models use it, as
    interval bounds need more capacity than attacks to become tight (Gowal et al. 2018).

    Args:
        num_classes: number of logits.
        dataset: whose statistics the leading ``Normalize`` uses (28x28 grey images).
    """

    def __init__(self, num_classes: int = 10, dataset: str = "mnist"):
        super().__init__(num_classes, dataset, channels=(32, 64), hidden=512)


class MLP(nn.Sequential):
    """A fully connected MNIST classifier: 784 -> 512 -> 512 -> 10 with ReLU.

    A model with no convolutional prior, used as an independent "judge" of images made by
    attacking the CNNs (Tsipras et al.'s large-eps generation).

    Args:
        num_classes: number of logits.
        dataset: whose statistics the leading ``Normalize`` uses (28x28 grey images).
        hidden: width of the two hidden layers.
    """

    def __init__(self, num_classes: int = 10, dataset: str = "mnist", hidden: int = 512):
        super().__init__(
            Normalize.for_dataset(dataset),
            nn.Flatten(),
            nn.Linear(28 * 28, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


class _PreActBlock(nn.Module):
    """Pre-activation residual block (He et al., 2016b): BN-ReLU-conv, BN-ReLU-conv."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the paper.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32x32 colour images (the CIFAR-10 model of Wong et al., 2020).

    Args:
        num_classes: number of logits.
        dataset: whose statistics the leading ``Normalize`` uses.
    """

    def __init__(self, num_classes: int = 10, dataset: str = "cifar10"):
        super().__init__()
        self.normalize = Normalize.for_dataset(dataset)
        channels = self.normalize.mean.shape[1]
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_PreActBlock(in_planes, planes, stride), _PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, 32, 32) images in [0, 1] -> (N, num_classes) logits."""
        out = self.layers(self.conv1(self.normalize(x)))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 512)
        return self.linear(out)


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


ARCHITECTURES = {"madry-cnn": MadryCNN, "small-cnn": SmallCNN, "wide-cnn": WideCNN, "mlp": MLP,
                 "preact-resnet18": PreActResNet18, "vae": VAE}


def create(name: str, **kwargs) -> nn.Module:
    """A freshly initialised model by architecture name (``ARCHITECTURES``' keys)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; valid values are "
                         f"{', '.join(map(repr, ARCHITECTURES))}")
    return ARCHITECTURES[name](**kwargs)
