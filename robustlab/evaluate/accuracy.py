"""Accuracy, accuracy under the worst case over a list of attacks, and transfer between models.

:func:`robust_accuracy` is the flexible tool (any attacks, in any order); for a number to quote,
use :func:`robustlab.evaluate.attack_suite`, which fixes a strong protocol.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .. import masking
from .._checks import check_images, check_labels, check_logits, check_number, eval_mode
from ..attacks import fgm, fgsm

__all__ = ["accuracy", "robust_accuracy", "RobustAccuracy", "transfer_matrix", "Attack"]

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, batch_size: int = 500) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, batched, under ``torch.no_grad``.

    Runs on the device of ``x`` (the model must be there too) in eval mode, restoring every
    module's training flag; any callable ``x -> logits`` works.
    """
    check_images(x)
    check_labels(y, x)
    check_number(batch_size, "batch_size", low=1, integer=True)
    if x.shape[0] == 0:
        return float("nan")
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.no_grad(), eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            correct += (model(x[i:i + batch_size]).argmax(dim=1) == y[i:i + batch_size]).sum()
    return float(correct) / x.shape[0]


# --- worst case over a list of attacks --------------------------------------------------------

class RobustAccuracy(NamedTuple):
    """Result of :func:`robust_accuracy`.

    Attributes:
        accuracy: fraction of examples classified correctly and not fooled by any attack.
        clean_accuracy: fraction classified correctly without attack.
        robust: (N,) bool, True where the example withstood every attack.
        broken_by: (N,) int64: -1 robust, 0 misclassified clean, i >= 1 the i-th attack (in
            ``names`` order) was the first to succeed.
        names: the attacks' names, in the order they were run.
    """

    accuracy: float
    clean_accuracy: float
    robust: Tensor
    broken_by: Tensor
    names: tuple[str, ...]


def _attack_name(fn: Callable) -> str:
    if isinstance(fn, functools.partial):
        args = ", ".join(f"{k}={v}" for k, v in fn.keywords.items() if k != "generator")
        return f"{_attack_name(fn.func)}({args})"
    return getattr(fn, "__name__", type(fn).__name__)


def _base(fn: Callable) -> Callable:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _run_attack(name: str, fn: Attack, model, xb: Tensor, yb: Tensor) -> Tensor:
    x_adv = fn(model, xb, yb)
    if not isinstance(x_adv, Tensor) or x_adv.shape != xb.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
        raise ValueError(f"attack {name!r} must return x_adv of shape {tuple(xb.shape)}, got {got}")
    check_images(x_adv, name=f"x_adv returned by attack {name!r}")
    return x_adv


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor,
                    attacks: Sequence[Attack] | Mapping[str, Attack], *,
                    batch_size: int = 256, checks: bool = True) -> RobustAccuracy:
    """Accuracy under the per-example worst case over several attacks.

    An example counts as robust only if it is classified correctly and every attack fails on
    it. Attacks run in order on the examples that are still robust, so later (stronger, slower)
    attacks only see what earlier ones could not break. The model runs in eval mode and every
    module's training flag is restored afterwards.

    With ``checks=True`` it also looks for gradient masking (:mod:`robustlab.masking`): a model
    whose output is random, input gradients that are exactly zero, and — when the list holds a
    single-step attack (FGSM, FGM) before a multi-step one — examples the single step broke
    that the multi-step attack cannot. For a trustworthy number use :func:`attack_suite`.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        attacks: callables ``attack(model, x, y) -> x_adv``, e.g.
            ``functools.partial(pgd, eps=0.3, alpha=0.01, steps=40)``; a dict gives them names.
        batch_size: examples per batch; bounds the memory use.
        checks: run the masking checks (each a :class:`robustlab.masking.MaskingWarning`).

    Returns:
        A :class:`RobustAccuracy` with the accuracy and the per-example result.
    """
    check_images(x)
    check_labels(y, x)
    check_number(batch_size, "batch_size", low=1, integer=True)
    if isinstance(attacks, Mapping):
        names, fns = tuple(str(k) for k in attacks), list(attacks.values())
    elif isinstance(attacks, Sequence) and not isinstance(attacks, str):
        fns = list(attacks)
        names = tuple(_attack_name(fn) for fn in fns)
    else:
        raise TypeError(
            f"attacks must be a list or dict of callables attack(model, x, y) -> x_adv, got "
            f"{type(attacks).__name__}; wrap one attack as [functools.partial(pgd, eps=...)]"
        )
    for name, fn in zip(names, fns):
        if not callable(fn):
            raise TypeError(f"attack {name!r} is not callable: {fn!r}")
    single = [i for i, fn in enumerate(fns) if _base(fn) in (fgsm, fgm)]
    multi = [i for i, fn in enumerate(fns) if _base(fn) not in (fgsm, fgm)]

    n = x.shape[0]
    broken_by = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    single_only = 0
    with eval_mode(model):
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with torch.no_grad():
                logits = model(xb)
            if start == 0:
                check_logits(logits, yb, xb.shape[0])
                if checks and n:
                    masking.check_randomness(model, xb, stacklevel=3)
                    masking.check_zero_gradients(model, xb, yb, stacklevel=3)
            status = torch.where(logits.argmax(dim=1) == yb, -1, 0)  # (B,)
            for i, (name, fn) in enumerate(zip(names, fns), start=1):
                idx = (status == -1).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                x_adv = _run_attack(name, fn, model, xb[idx], yb[idx])
                with torch.no_grad():
                    fooled = model(x_adv).argmax(dim=1) != yb[idx]
                status[idx[fooled]] = i
            if checks and single and multi:
                # Would the first multi-step attack also have broken what a single step broke?
                s_idx = torch.isin(status, torch.tensor(single, device=status.device) + 1).nonzero().squeeze(1)
                if s_idx.numel():
                    j = multi[0]
                    x_adv = _run_attack(names[j], fns[j], model, xb[s_idx], yb[s_idx])
                    with torch.no_grad():
                        single_only += int((model(x_adv).argmax(dim=1) == yb[s_idx]).sum())
            broken_by[start:start + batch_size] = status
    if checks and single and multi:
        masking.check_single_step(names[single[0]], names[multi[0]], single_only, n, stacklevel=2)
    robust = broken_by == -1
    return RobustAccuracy(
        accuracy=float(robust.float().mean()) if n else float("nan"),
        clean_accuracy=float((broken_by != 0).float().mean()) if n else float("nan"),
        robust=robust,
        broken_by=broken_by,
        names=names,
    )


# --- transfer --------------------------------------------------------------------------------

def transfer_matrix(sources: Mapping[str, nn.Module], x: Tensor, y: Tensor, *, attack: Attack,
                    targets: Mapping[str, nn.Module] | None = None, batch_size: int = 500) -> Tensor:
    """Accuracy of each target model on adversarial examples crafted on each source model.

    Args:
        sources: name -> model the attack is run on.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,).
        attack: ``attack(model, x, y) -> x_adv``, e.g. ``functools.partial(robustlab.fgsm, eps=0.3)``.
        targets: name -> evaluated model (default: the sources).
        batch_size: examples per attack call.

    Returns:
        (len(sources), len(targets)) accuracies; the diagonal (same model) is the white-box case.
    """
    x = check_images(x)
    y = check_labels(y, x)
    targets = sources if targets is None else targets
    out = torch.zeros(len(sources), len(targets))
    for i, src in enumerate(sources.values()):
        x_adv = torch.cat([attack(src, x[b:b + batch_size], y[b:b + batch_size])
                           for b in range(0, x.shape[0], batch_size)])
        for j, tgt in enumerate(targets.values()):
            out[i, j] = accuracy(tgt, x_adv, y, batch_size=batch_size)
    return out
