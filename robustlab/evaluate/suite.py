"""The attack suite: AutoAttack's protocol (Croce & Hein, 2020) with masking checks.

APGD-CE, then APGD-T with the targeted DLR loss, then the gradient-free Square attack, each only
on the examples still standing, with the masking checks of :mod:`robustlab.masking`; the result
says per example which attack broke it. Runs are seeded per batch and can resume from a
checkpoint after a kill.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import masking, stats
from .._checks import check_choice, check_images, check_labels, check_logits, check_number, eval_mode
from ..attacks import NORMS, apgd, fgm, fgsm, square
from .accuracy import Attack

__all__ = ["attack_suite", "SuiteResult", "SUITES", "describe_suite", "BROKEN_BY_NAMES", "state_digest"]


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


def state_digest(*items: nn.Module | Tensor) -> str:
    """A short sha256 of models' weights (state dicts, in order) and tensors' values, shapes and
    dtypes: it ties a stored result or a checkpoint to the model and data it was computed on."""
    h = hashlib.sha256()
    for item in items:
        tensors = list(item.state_dict().items()) if isinstance(item, nn.Module) else [("", item)]
        for key, t in tensors:
            t = t.detach().cpu().contiguous()
            h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


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
            again with the same file, settings, model and digits resumes after the last finished
            batch (another model or other digits raise an error naming the file).
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
    if checkpoint is not None:  # a checkpoint resumes only the same model on the same digits
        settings["digest"] = state_digest(model, x, y)
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
