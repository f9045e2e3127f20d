"""The classifiers: each takes images in [0, 1], with normalisation as its first layer.

Keeping ``Normalize`` inside the model means that ``eps``, ``sigma`` and certified radii are
always in pixel units, whatever statistics the model was trained with (the lesson of Cohen et
al.'s NormalizeLayer).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import MEAN, STD

__all__ = ["Normalize", "MadryCNN", "SmallCNN", "WideCNN", "MLP", "PreActResNet18"]


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
