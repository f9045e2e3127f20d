"""Input validation and model-state helpers shared by every algorithm.

Every public algorithm checks its arguments here before doing any work, so a bad call fails
with a message that names the argument, the value seen and the fix, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from typing import Iterator

import torch
from torch import Tensor, nn

NORM_FIX = "put normalisation inside the model with robustlab.models.Normalize"


def check_images(x: object, name: str = "x") -> Tensor:
    """Checks that ``x`` is an (N, C, H, W) floating tensor with finite values in [0, 1]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}; "
            f"add a batch dimension with {name}.unsqueeze(0) for a single image"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor with values in [0, 1], got dtype {x.dtype}; "
            f"convert with {name}.float() / 255 for 8-bit images"
        )
    if x.numel() == 0:
        return x
    values = x.detach()  # a tensor that requires grad is checked without touching its graph
    if not bool(torch.isfinite(values).all()):
        n_bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite values; clean the input first")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got min={lo:.4g}, max={hi:.4g}; {NORM_FIX}")
    return x


def check_labels(y: object, x: Tensor, name: str = "y") -> Tensor:
    """Checks that ``y`` is an int64 tensor of shape (N,) on the device of ``x``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N,) int64, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must have shape ({x.shape[0]},) to match x of shape {tuple(x.shape)}, "
            f"got {tuple(y.shape)}"
        )
    if y.dtype != torch.int64:
        raise ValueError(f"{name} must be int64 class indices, got dtype {y.dtype}; use {name}.long()")
    if y.device != x.device:
        raise ValueError(f"{name} is on {y.device} but x is on {x.device}; move both to one device")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got min={int(y.min())}")
    return y


def check_number(value: object, name: str, *, low: float, strict: bool = False,
                 integer: bool = False) -> None:
    """Checks a finite scalar setting against a lower bound (``>= low``, or ``> low`` if strict)."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an int" if integer else "a real number"
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (value <= low) if strict else (value < low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Checks that ``value`` is one of ``choices`` (case-insensitive); returns it lower-cased."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise ValueError(f"unknown {name} {value!r}; valid values are {', '.join(map(repr, choices))}")


def check_generator(generator: object, x: Tensor) -> None:
    """Checks that ``generator`` is None or a torch.Generator on the device of ``x``."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}; "
            f"create it with torch.Generator(device=x.device)"
        )


def check_flag(value: object, name: str) -> None:
    """Checks that a switch such as ``targeted`` is a real bool (not a string or a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_logits_shape(logits: object, n: int) -> Tensor:
    """Checks that a model's output on a batch of ``n`` images is an (n, K) tensor."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"model must return a Tensor of logits (N, K), got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ValueError(
            f"model output must be logits of shape (N, K) = ({n}, K), got {tuple(logits.shape)}; "
            f"flatten the last layer's output or drop extra dimensions"
        )
    return logits


def check_logits(logits: object, y: Tensor, n: int, stacklevel: int = 3) -> Tensor:
    """Checks a model's output on a batch of ``n`` images against the labels ``y``.

    Raises if the output is not (N, K) or a label is >= K; warns if the rows look like
    probabilities, because attacks and losses here expect unnormalised logits. ``stacklevel``
    makes the warning point at the user's call.
    """
    check_logits_shape(logits, n)
    k = logits.shape[1]
    if y.numel() and int(y.max()) >= k:
        raise ValueError(
            f"labels must be < the model's {k} classes, got max label {int(y.max())}; "
            f"check that y matches this model's output"
        )
    with torch.no_grad():
        sums = logits.detach().sum(dim=1)
        looks_like_probs = bool((logits.detach() >= 0).all()) and bool(
            torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
        )
    if looks_like_probs and k > 1:
        warnings.warn(
            "the model's outputs are non-negative and sum to 1 per row: they look like "
            "probabilities, but attacks expect logits; remove the final softmax",
            stacklevel=stacklevel,
        )
    return logits


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Runs ``model`` in eval mode and restores every submodule's own training flag afterwards.

    Restoring flag by flag (not ``model.train(was_training)``) keeps a model whose parts were
    deliberately in different modes (a frozen BatchNorm in a training model) exactly as it was.
    """
    if not isinstance(model, nn.Module):  # a plain function of x has no mode to switch
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable x -> logits, got {type(model).__name__}")
        yield model
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
