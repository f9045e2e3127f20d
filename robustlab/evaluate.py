"""Evaluating robustness: accuracy, worst-case accuracy over attacks, transfer, and the attack suite.

A robust accuracy is only an upper bound, as good as the strongest attack tried.
:func:`attack_suite` runs the AutoAttack protocol of Croce & Hein (2020) — APGD-CE, then APGD-T
with the targeted DLR loss, then the gradient-free Square attack, each only on the examples
still standing — and the masking checks of :mod:`robustlab.masking`, and reports per example
which attack broke it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import masking, stats
from ._checks import check_choice, check_images, check_labels, check_logits, check_number, eval_mode
from .attacks import NORMS, apgd, fgm, fgsm, square

__all__ = ["accuracy", "robust_accuracy", "RobustAccuracy", "transfer_matrix", "attack_suite",
           "SuiteResult", "SUITES", "describe_suite"]

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


# --- the attack suite ------------------------------------------------------------------------

# name -> (attack name, settings) in the order they run. "standard" is AutoAttack's standard
# version (FAB-T left out: it rarely adds a break after APGD-T); "quick" is a cheap version for
# live demonstrations, weaker, and labelled so wherever it is used.
SUITES: dict[str, tuple[tuple[str, dict], ...]] = {
    "standard": (("apgd-ce", {"loss": "ce", "steps": 100}),
                 ("apgd-t", {"loss": "dlr", "targeted": True, "n_target_classes": 9, "steps": 100}),
                 ("square", {"queries": 5000})),
    "quick": (("apgd-ce", {"loss": "ce", "steps": 20}),
              ("apgd-t", {"loss": "dlr", "targeted": True, "n_target_classes": 3, "steps": 20}),
              ("square", {"queries": 300})),
}


def describe_suite(version: str = "standard") -> str:
    """One line that names the attacks and settings of a suite version, for reports and cards."""
    version = check_choice(version, "version", tuple(SUITES))
    parts = []
    for name, kw in SUITES[version]:
        if name == "square":
            parts.append(f"Square ({kw['queries']:,} queries)")
        elif kw.get("targeted"):
            parts.append(f"APGD-T (DLR, {kw['n_target_classes']} targets, {kw['steps']} steps)")
        else:
            parts.append(f"APGD-CE ({kw['steps']} steps)")
    return f"attack suite '{version}': " + " -> ".join(parts) + ", each on the examples still robust; " \
        "worst case per example, with masking checks"


class SuiteResult(NamedTuple):
    """Result of :func:`attack_suite`.

    Attributes:
        accuracy: robust accuracy, the fraction of examples in ``robust``.
        clean: (N,) bool, classified correctly without attack.
        robust: (N,) bool, classified correctly and not broken by any attack.
        broken_by: per example, the name of the attack that broke it (``"apgd-ce"``,
            ``"apgd-t"``, ``"square"``, or ``"fgsm"``/``"fgm"`` for the single-step masking
            check), ``"clean"`` if misclassified without attack, None if robust.
        x_adv: (N, C, H, W): the adversarial example found for each broken example; ``x`` where
            none was found or the example was misclassified clean.
    """

    accuracy: float
    clean: Tensor
    robust: Tensor
    broken_by: tuple
    x_adv: Tensor

    @property
    def clean_accuracy(self) -> float:
        """Fraction classified correctly without attack."""
        return float(self.clean.float().mean()) if self.clean.numel() else float("nan")

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Clopper–Pearson interval of the robust accuracy over these examples (sampling
        uncertainty only: the accuracy itself stays an upper bound, as strong as the attacks)."""
        return stats.proportion_interval(int(self.robust.sum()), self.robust.numel(), level=level)

    def counts(self) -> dict[str, int]:
        """How many examples each attack broke (and how many were wrong clean), in run order."""
        out: dict[str, int] = {}
        for b in self.broken_by:
            if b is not None:
                out[b] = out.get(b, 0) + 1
        return out


# Every value of SuiteResult.broken_by but None, in run order; their positions are the codes in checkpoints.
BROKEN_BY_NAMES = ("clean", "apgd-ce", "apgd-t", "square", "fgsm", "fgm")


def _suite_attack(name: str, kw: dict, norm: str, eps: float, generator: torch.Generator) -> Attack:
    if name == "square":
        return functools.partial(square, eps=eps, norm=norm, generator=generator, **kw)
    return functools.partial(apgd, eps=eps, norm=norm, generator=generator, **kw)


def attack_suite(model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float,
                 version: str = "standard", seed: int = 0, batch_size: int = 500,
                 progress: bool = False, checks: bool = True,
                 checkpoint: str | os.PathLike | None = None, index_offset: int = 0) -> SuiteResult:
    """The AutoAttack protocol: APGD-CE -> APGD-T -> Square, worst case per example.

    Each attack runs only on the examples every earlier one left standing. The masking checks
    (``checks=True``) add: a random model (two calls differ), inputs whose gradient is exactly
    zero, APGD-CE at an eps that allows any image (accuracy must fall near zero), Square
    breaking a noticeable share of what the gradient attacks missed, and FGSM (FGM for L2)
    breaking examples the suite did not — those count as broken (by ``"fgsm"``/``"fgm"``), so
    the result is a worst case over every attack run. Each symptom is a
    :class:`robustlab.masking.MaskingWarning`.

    Randomness is seeded per batch from ``seed``: the same seed and ``batch_size`` give the same
    result, and a run resumed from ``checkpoint`` gives the same result as an unbroken one.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits, on the device of ``x``.
        x: clean images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        norm: ``"linf"`` or ``"l2"``.
        eps: radius in pixel units, >= 0.
        version: ``"standard"`` (AutoAttack's settings: 100 steps, 9 target classes, 5,000
            queries) or ``"quick"`` (20 steps, 3 targets, 300 queries: for live demonstrations,
            weaker).
        seed: seed of the attacks' randomness.
        batch_size: examples per batch, >= 1.
        progress: show a tqdm progress bar over batches.
        checks: run the masking checks.
        checkpoint: a file to save the per-example results to after every batch; a run started
            again with the same file (and settings) resumes after the last finished batch.
        index_offset: the position of ``x[0]`` in a larger set that is evaluated in slices (one
            per process); the seeds follow the global position, so the slices together give
            the result of one run over the whole set when each slice starts at a multiple of
            ``batch_size``.

    Returns:
        A :class:`SuiteResult`.
    """
    norm = check_choice(norm, "norm", NORMS)
    version = check_choice(version, "version", tuple(SUITES))
    check_images(x)
    check_labels(y, x)
    check_number(eps, "eps", low=0.0)
    check_number(seed, "seed", low=0, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    check_number(index_offset, "index_offset", low=0, integer=True)
    from tqdm.auto import tqdm

    x, n = x.detach(), x.shape[0]
    plan = SUITES[version]
    single_name = "fgsm" if norm == "linf" else "fgm"
    settings = {"norm": norm, "eps": float(eps), "version": version, "seed": seed,
                "batch_size": batch_size, "n": n, "checks": checks, "index_offset": index_offset}
    code = torch.full((n,), -1, dtype=torch.int64)  # -1 robust, else an index into BROKEN_BY_NAMES
    x_adv = x.clone()
    done = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["settings"] != settings:
            raise ValueError(f"checkpoint {str(path)!r} was written with settings {state['settings']}, "
                             f"not {settings}; delete it or pass another checkpoint file")
        done, code = int(state["done"]), state["code"]
        x_adv[:done] = state["x_adv"][:done].to(x.device, x.dtype)
    n_single_only = 0
    with eval_mode(model):
        if checks and n and done == 0:
            head = slice(0, min(n, batch_size))
            masking.check_randomness(model, x[head], stacklevel=3)
            masking.check_zero_gradients(model, x[head], y[head], stacklevel=3)
            probe = slice(0, min(n, 100))
            masking.check_unbounded(model, x[probe], y[probe], norm=norm,
                                    generator=torch.Generator(x.device).manual_seed(seed), stacklevel=3)
        bar = tqdm(total=n, initial=done, desc=f"suite {norm} eps={eps:g}", disable=not progress, unit="ex")
        for start in range(done, n, batch_size):
            stop = min(n, start + batch_size)
            xb, yb = x[start:stop], y[start:stop]
            gen = torch.Generator(x.device).manual_seed(seed * 1_000_003 + index_offset + start)
            with torch.no_grad():
                logits = model(xb)
            check_logits(logits, yb, xb.shape[0])
            status = torch.where(logits.argmax(dim=1) == yb, -1, 0).cpu()
            adv_b = xb.clone()
            for name, kw in plan:
                idx = (status == -1).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                idx_d = idx.to(x.device)
                found = _suite_attack(name, kw, norm, eps, gen)(model, xb[idx_d], yb[idx_d])
                with torch.no_grad():
                    fooled = (model(found).argmax(dim=1) != yb[idx_d])
                adv_b[idx_d[fooled]] = found[fooled]
                status[idx[fooled.cpu()]] = BROKEN_BY_NAMES.index(name)
            if checks:
                # The single-step check: anything FGSM/FGM breaks that the suite did not counts.
                idx = (status == -1).nonzero().squeeze(1)
                if idx.numel():
                    idx_d = idx.to(x.device)
                    one = (fgsm if norm == "linf" else fgm)(model, xb[idx_d], yb[idx_d], eps=eps)
                    with torch.no_grad():
                        fooled = model(one).argmax(dim=1) != yb[idx_d]
                    adv_b[idx_d[fooled]] = one[fooled]
                    status[idx[fooled.cpu()]] = BROKEN_BY_NAMES.index(single_name)
                    n_single_only += int(fooled.sum())
            code[start:stop] = status
            x_adv[start:stop] = adv_b
            if path is not None:
                _save_checkpoint(path, {"settings": settings, "done": stop, "code": code,
                                        "x_adv": x_adv.cpu()})
            bar.update(stop - start)
        bar.close()
    broken_by = tuple(None if c < 0 else BROKEN_BY_NAMES[c] for c in code.tolist())
    if checks:
        masking.check_single_step(single_name.upper(), "the suite's gradient attacks", n_single_only, n,
                                  stacklevel=2)
        n_square = sum(b == "square" for b in broken_by)
        n_left = n_square + sum(b is None for b in broken_by)
        masking.check_gradient_free(n_square, n_left, stacklevel=2)
    robust = (code == -1).to(x.device)
    clean = (code != 0).to(x.device)
    return SuiteResult(float(robust.float().mean()) if n else float("nan"), clean, robust, broken_by, x_adv)


def _save_checkpoint(path: Path, state: dict) -> None:
    """Writes beside ``path`` and renames, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
