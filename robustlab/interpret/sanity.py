"""Sanity checks for saliency maps (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018).

A map that explains a model must change when the model's learned weights are destroyed. The
*model parameter randomisation test* re-initialises the weights of the trained network, layer
by layer, and compares the saliency maps before and after:

- **cascading**: randomise the top (logit) layer, then the top two, and so on down to the
  first layer, so the last model has no learned weight left;
- **independent**: randomise one layer at a time, all the others keeping their trained values.

Similarity is the Spearman rank correlation of the maps, per example, of their absolute values
and of the signed maps (Adebayo et al. report both, with SSIM and HOG). A method whose maps stay
similar after randomisation (an edge detector would) is insensitive to the model; a map that
does not drop cannot be evidence about what the model learned.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn

from .._checks import check_choice, check_generator, check_images

__all__ = ["MODES", "randomizable_layers", "randomize_layers", "rank_correlation", "RandomizationResult",
           "randomization_test"]

MODES = ("cascading", "independent")


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers with learned weights (``nn.Linear``, ``nn.Conv2d``, batch norms), from
    the output back to the input (the order of the cascading test)."""
    names = [name for name, m in model.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d, nn.modules.batchnorm._BatchNorm)) and any(
                 True for _ in m.parameters(recurse=False))]
    if not names:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Linear, nn.Conv2d or batch-norm layer "
                         "to randomise")
    return names[::-1]


def _reinit(module: nn.Module, generator: torch.Generator) -> None:
    """Draws fresh parameters from PyTorch's default initialisation, with ``generator``."""
    with torch.no_grad():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.weight is not None:
                module.weight.fill_(1.0)
                module.bias.zero_()
            if module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
            return
        weight = module.weight
        fan_in = weight[0].numel()  # in_features, or in_channels/groups * kernel area
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and the bias rule give this bound
        weight.copy_(torch.rand(weight.shape, generator=generator, device=weight.device,
                                dtype=weight.dtype) * 2 * bound - bound)
        if module.bias is not None:
            module.bias.copy_(torch.rand(module.bias.shape, generator=generator, device=weight.device,
                                         dtype=weight.dtype) * 2 * bound - bound)


def randomize_layers(model: nn.Module, layers: list[str], *, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` whose named ``layers`` are re-initialised (PyTorch's default
    distribution: uniform in ±1/sqrt(fan-in) for weights and biases; batch norms reset to the
    identity); ``model`` itself is not changed."""
    known = dict(model.named_modules())
    for name in layers:
        if name not in known:
            raise ValueError(f"layers: {name!r} is not a module of the model; valid values are "
                             f"{', '.join(map(repr, randomizable_layers(model)))}")
    copy_ = copy.deepcopy(model)
    modules = dict(copy_.named_modules())
    g = generator if generator is not None else torch.Generator(
        device=next(model.parameters()).device).manual_seed(0)
    for name in layers:
        _reinit(modules[name], g)
    return copy_


def rank_correlation(a: Tensor, b: Tensor, *, absolute: bool = True) -> Tensor:
    """Spearman rank correlation per example between two attributions, (N,).

    Maps are summed over channels (of their absolute values when ``absolute``); ties get their
    average rank; a constant map has correlation 0 with anything.
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"a and b must be attributions of one shape (N, C, H, W), got "
                         f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")

    def ranks(t: Tensor) -> np.ndarray:
        t = t.detach().abs() if absolute else t.detach()
        return rankdata(t.sum(dim=1).flatten(1).double().cpu().numpy(), axis=1, method="average")
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    rho = np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    return torch.as_tensor(rho, dtype=torch.float64)


class RandomizationResult(NamedTuple):
    """The model parameter randomisation test.

    Attributes:
        mode: "cascading" or "independent".
        layers: the layer randomised at each step (cascading: the deepest one added at that step).
        spearman_abs: (len(layers), N) rank correlation of |map| with the trained model's.
        spearman: (len(layers), N) rank correlation of the signed maps.
    """

    mode: str
    layers: list[str]
    spearman_abs: Tensor
    spearman: Tensor


def randomization_test(model: nn.Module, x: Tensor, target: Tensor,
                       attribute: Callable[[nn.Module, Tensor, Tensor], Tensor], *, mode: str = "cascading",
                       generator: torch.Generator | None = None) -> RandomizationResult:
    """Adebayo et al.'s model parameter randomisation test for one saliency method.

    Args:
        model: the trained classifier (not changed).
        x: images, (N, C, H, W), in [0, 1].
        target: (N,) classes whose maps are compared (e.g. the labels).
        attribute: ``attribute(model, x, target) -> (N, C, H, W)``, e.g.
            ``lambda m, x, t: saliency.gradient(m, x, t)``.
        mode: ``"cascading"`` or ``"independent"``.
        generator: random source of the new weights (default: seed 0).

    Returns:
        :class:`RandomizationResult`.
    """
    x = check_images(x)
    check_choice(mode, "mode", MODES)
    check_generator(generator, x)
    if not callable(attribute):
        raise ValueError(f"attribute must be a function (model, x, target) -> attribution, got {attribute!r}")
    order = randomizable_layers(model)
    g = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
    reference = attribute(model, x, target)
    rows_abs, rows = [], []
    cascade = model
    for name in order:
        # Cascading: each step adds one layer to the previous step's model (the layers above keep
        # the random weights they already got); independent: one layer of the trained model.
        randomized = randomize_layers(cascade if mode == "cascading" else model, [name], generator=g)
        cascade = randomized
        attr = attribute(randomized, x, target)
        rows_abs.append(rank_correlation(reference, attr, absolute=True))
        rows.append(rank_correlation(reference, attr, absolute=False))
    return RandomizationResult(mode, order, torch.stack(rows_abs), torch.stack(rows))
