"""The checks' inputs: digits, small models with fixed seeds, zoo models (derived the same way in
the checker and, pickled, in the worker)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["digits", "cnn", "mlp", "zoo_model", "gen"]


def digits(n: int, seed: int) -> tuple[Tensor, Tensor]:
    from .. import data

    ds = data.embedded_mnist()
    idx = torch.randperm(len(ds.y), generator=torch.Generator().manual_seed(seed))[:n]
    return ds.x[idx].clone(), ds.y[idx].clone()


def cnn(seed: int) -> nn.Module:
    from .. import models

    torch.manual_seed(seed)
    return models.SmallCNN().eval()


def mlp(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, 64), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(64, 10))
    return nn.Sequential(*layers).eval()


def zoo_model(name: str) -> nn.Module:
    from .. import zoo

    return zoo.load(name)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
