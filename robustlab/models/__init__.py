"""Models that take images in [0, 1]: the classifiers under study (normalisation is their first
layer) and the generative models of the learned image manifold.

Keeping ``Normalize`` inside the model means that ``eps``, ``sigma`` and certified radii are
always in pixel units, whatever statistics the model was trained with (the lesson of Cohen et
al.'s NormalizeLayer).
"""

from __future__ import annotations

from torch import nn

from .classifiers import MLP, MadryCNN, Normalize, PreActResNet18, SmallCNN, WideCNN
from .vae import VAE, train_vae, vae_loss
from .vaegan import Discriminator, train_vaegan, vaegan_losses, vaegan_step

__all__ = ["Normalize", "MadryCNN", "SmallCNN", "WideCNN", "MLP", "PreActResNet18", "VAE", "vae_loss", "train_vae",
           "Discriminator", "vaegan_losses", "vaegan_step", "train_vaegan", "ARCHITECTURES", "create"]

ARCHITECTURES = {"madry-cnn": MadryCNN, "small-cnn": SmallCNN, "wide-cnn": WideCNN, "mlp": MLP,
                 "preact-resnet18": PreActResNet18, "vae": VAE}


def create(name: str, **kwargs) -> nn.Module:
    """A freshly initialised model by architecture name (``ARCHITECTURES``' keys)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; valid values are "
                         f"{', '.join(map(repr, ARCHITECTURES))}")
    return ARCHITECTURES[name](**kwargs)
