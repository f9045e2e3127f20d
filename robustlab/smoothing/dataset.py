"""Certifying a set of images: :func:`certify_dataset`, its per-image table
:class:`CertificationResults` and the summaries (certified accuracy, ACR, the curves)."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_generator, check_images, check_labels
from ..evaluate import state_digest
from .algorithms import _certify, _check_alpha, _check_settings

__all__ = ["CertificationResults", "certify_dataset", "certified_accuracy", "average_certified_radius",
           "plot_certified_accuracy"]


@dataclass(frozen=True)
class CertificationResults:
    """Per-image certificates from :func:`certify_dataset`: one row per image.

    Attributes:
        index: (N,) position of the image in the certified set.
        label: (N,) true class.
        prediction: (N,) certified class or ``ABSTAIN``.
        radius: (N,) certified L2 radius (0.0 when abstaining), float64.
        correct: (N,) bool, prediction == label.
        time: (N,) seconds spent on each image, float64.
        sigma, n0, n, alpha: the settings used.
    """

    index: Tensor
    label: Tensor
    prediction: Tensor
    radius: Tensor
    correct: Tensor
    time: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float
    columns: tuple[str, ...] = field(default=("index", "label", "prediction", "radius", "correct", "time"),
                                     init=False, repr=False)

    def __len__(self) -> int:
        return int(self.index.numel())

    def rows(self) -> list[dict]:
        """The table as a list of dicts: the per-image ``columns`` plus the settings."""
        cols = {c: getattr(self, c).tolist() for c in self.columns}
        settings = {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha}
        return [{**{c: cols[c][i] for c in self.columns}, **settings} for i in range(len(self))]

    def to_csv(self, path: str | Path) -> None:
        """Writes one row per image: ``columns``, then sigma, n0, n and alpha (the same in every
        row, so that the file describes itself; :meth:`from_csv` reads it back)."""
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*self.columns, "sigma", "n0", "n", "alpha"])
            writer.writeheader()
            writer.writerows(self.rows())

    @classmethod
    def from_csv(cls, path: str | Path) -> "CertificationResults":
        """Reads a table written by :meth:`to_csv`."""
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{path} holds no certificates")
        missing = {"index", "label", "prediction", "radius", "correct", "time", "sigma", "n0", "n",
                   "alpha"} - set(rows[0])
        if missing:
            raise ValueError(f"{path} is not a CertificationResults table: it lacks the columns "
                             f"{sorted(missing)}; write it with CertificationResults.to_csv")
        col = lambda name, kind: [kind(r[name]) for r in rows]
        return cls(
            index=torch.tensor(col("index", int)), label=torch.tensor(col("label", int)),
            prediction=torch.tensor(col("prediction", int)),
            radius=torch.tensor(col("radius", float), dtype=torch.float64),
            correct=torch.tensor(col("correct", lambda v: v == "True")),
            time=torch.tensor(col("time", float), dtype=torch.float64),
            sigma=float(rows[0]["sigma"]), n0=int(rows[0]["n0"]), n=int(rows[0]["n"]),
            alpha=float(rows[0]["alpha"]),
        )


def certify_dataset(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float, n0: int, n: int,
                    alpha: float, batch_size: int = 1000, generator: torch.Generator | None = None,
                    progress: bool = True, checkpoint: str | os.PathLike | None = None) -> CertificationResults:
    """:func:`certify` for each image of a batch, with a tqdm progress bar; resumable.

    With ``checkpoint`` the certificates so far (predictions, radii, times) and the state of the
    noise source are written to that file after every image (to a temporary file that replaces
    it, so a kill never leaves half a file). A later call with the same file resumes after the
    last finished image and returns exactly what an unbroken run returns: the same predictions
    and radii (the finished images keep their times), with the generator left in the same
    state. The file must come from the same settings, model weights, images, labels and initial
    generator state, else a ValueError names the mismatch. It is kept when the run completes:
    calling again returns the stored table without certifying anything, so delete the file once
    the results are stored elsewhere.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        sigma, n0, n, alpha, batch_size, generator: as in :func:`certify`; one generator is used
            for all images in turn. With ``generator=None`` the noise comes from torch's global
            generator of ``x``'s device, whose state the checkpoint stores too and a resumed run
            sets back (so it ends where an unbroken run would).
        progress: show a progress bar.
        checkpoint: a file (``str`` or path) to save to after every image and resume from, or
            None. Writing it costs about a millisecond per image.

    Returns:
        a :class:`CertificationResults` table.
    """
    x = check_images(x)
    y = check_labels(y, x)
    _check_settings(sigma, batch_size, n0=n0, n=n)
    _check_alpha(alpha)
    check_generator(generator, x)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path (str or os.PathLike) or None, got "
                        f"{type(checkpoint).__name__}")
    predictions, radii, times = [], [], []
    path = settings = None
    if checkpoint is not None:
        path = Path(checkpoint)
        settings = _checkpoint_settings(model, x, y, sigma=sigma, n0=n0, n=n, alpha=alpha,
                                        batch_size=batch_size, generator=generator)
        if path.exists():
            state = _load_checkpoint(path, settings)
            predictions, radii = state["prediction"].tolist(), state["radius"].tolist()
            times = state["time"].tolist()
            _set_rng_state(generator, x.device, state["rng_state"])
    done = len(predictions)
    bar = tqdm(range(done, x.shape[0]), total=x.shape[0], initial=done, desc=f"certify sigma={sigma:g}",
               disable=not progress, unit="img")
    correct_so_far = sum(p == label for p, label in zip(predictions, y[:done].tolist()))
    for i in bar:
        start = time.perf_counter()
        cert = _certify(model, x[i], sigma, n0, n, alpha, batch_size, generator)
        times.append(time.perf_counter() - start)
        predictions.append(cert.prediction)
        radii.append(cert.radius)
        if path is not None:
            _save_checkpoint(path, {
                "settings": settings, "done": i + 1,
                "prediction": torch.tensor(predictions, dtype=torch.int64),
                "radius": torch.tensor(radii, dtype=torch.float64),
                "time": torch.tensor(times, dtype=torch.float64),
                "rng_state": _rng_state(generator, x.device),
            })
        correct_so_far += cert.prediction == int(y[i])
        bar.set_postfix(certified=f"{correct_so_far}/{i + 1}", refresh=False)
    prediction = torch.tensor(predictions, dtype=torch.int64)
    label = y.detach().cpu()
    return CertificationResults(
        index=torch.arange(x.shape[0]), label=label, prediction=prediction,
        radius=torch.tensor(radii, dtype=torch.float64), correct=prediction == label,
        time=torch.tensor(times, dtype=torch.float64), sigma=float(sigma), n0=int(n0), n=int(n),
        alpha=float(alpha),
    )


# --- checkpoints --------------------------------------------------------------------------------

_CHECKPOINT_FORMAT = 1


def _rng_state(generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The state of the noise source: ``generator``, else torch's default generator of ``device``."""
    if generator is not None:
        return generator.get_state()
    if device.type == "cpu":
        return torch.get_rng_state()
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    raise ValueError(f"checkpoint cannot save the global random state of device {device} (generator=None); "
                     f"pass generator=torch.Generator(device=x.device).manual_seed(0)")


def _set_rng_state(generator: torch.Generator | None, device: torch.device, state: Tensor) -> None:
    if generator is not None:
        generator.set_state(state)
    elif device.type == "cpu":
        torch.set_rng_state(state)
    elif device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:  # mps; other devices were refused by _rng_state when the checkpoint was written
        torch.mps.set_rng_state(state)


def _checkpoint_settings(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float, n0: int, n: int,
                         alpha: float, batch_size: int, generator: torch.Generator | None) -> dict:
    """What a checkpoint must share with a call to resume it: the settings, a digest of the
    weights, images and labels, and the noise source with (for a generator) its initial state,
    so that another seed is not silently continued on the stream of the old one."""
    if generator is None:
        source = f"global {x.device.type}"
        _rng_state(None, x.device)  # refuses devices whose global state it cannot save, before any work
    else:
        source = f"generator {generator.device.type} " + state_digest(generator.get_state())
    return {"format": _CHECKPOINT_FORMAT, "sigma": float(sigma), "n0": int(n0), "n": int(n),
            "alpha": float(alpha), "batch_size": int(batch_size), "images": int(x.shape[0]),
            "digest": state_digest(model, x, y), "noise": source}


def _load_checkpoint(path: Path, settings: dict) -> dict:
    """The checkpoint at ``path``, checked against the settings of this call."""
    fix = "delete it or pass another checkpoint file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file or one that torch.save did not write
        raise ValueError(f"checkpoint {str(path)!r} cannot be read as a certify_dataset checkpoint "
                         f"({type(err).__name__}: {err}); {fix}") from err
    if not isinstance(state, dict) or not isinstance(state.get("settings"), dict):
        raise ValueError(f"checkpoint {str(path)!r} is not a certify_dataset checkpoint; {fix}")
    theirs = state["settings"]
    if theirs != settings:
        names = {"digest": "digest of the model's weights, x and y", "noise": "noise source"}
        diffs = "; ".join(f"{names.get(k, k)} {theirs.get(k)!r} there, {settings.get(k)!r} here"
                          for k in sorted(set(theirs) | set(settings)) if theirs.get(k) != settings.get(k))
        raise ValueError(f"checkpoint {str(path)!r} was written by another run ({diffs}); {fix}")
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    """Writes beside ``path`` and renames, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _check_results(results: object) -> CertificationResults:
    if not isinstance(results, CertificationResults):
        raise TypeError(f"results must be the CertificationResults returned by certify_dataset, "
                        f"got {type(results).__name__}")
    return results


def certified_accuracy(results: CertificationResults, radii: float | Sequence[float] | Tensor) -> Tensor:
    """Fraction of images certified correctly at L2 radius at least r, for each r in ``radii``.

    An image counts at r when its certified class is its label and its certified radius is
    >= r (Cohen et al.'s certified test-set accuracy; abstentions never count).

    Returns:
        float64 tensor with one accuracy per radius (a 0-d tensor for a single radius).
    """
    results = _check_results(results)
    r = torch.as_tensor(radii, dtype=torch.float64)
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError(f"radii must be finite and >= 0, got {r.tolist()}")
    if len(results) == 0:
        raise ValueError("results is empty: certify at least one image")
    ok = results.correct[:, None] & (results.radius[:, None] >= r.reshape(1, -1))  # (N, R)
    return ok.double().mean(dim=0).reshape(r.shape)


def average_certified_radius(results: CertificationResults) -> float:
    """The average certified radius (ACR): mean over images of the radius if correct, else 0.

    This is the usual definition (Zhai et al., 2020, MACER); it rewards both accuracy and
    radius. ``results.radius[results.correct].mean()`` is the mean radius of the correctly
    certified images instead.
    """
    results = _check_results(results)
    if len(results) == 0:
        raise ValueError("results is empty: certify at least one image")
    return float((results.radius * results.correct).mean())


def plot_certified_accuracy(runs: Mapping[str, CertificationResults], *, ax=None, max_radius: float | None = None,
                            points: int = 301):
    """Certified accuracy against L2 radius, one curve per run (Cohen et al., Figure 6 style).

    Args:
        runs: label -> results, e.g. ``{"sigma = 0.25": res_025, ...}``.
        ax: a matplotlib Axes to draw on (default: a new figure).
        max_radius: right end of the radius axis (default: the largest certified radius, +5 %).
        points: radii evaluated per curve.

    Returns:
        the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("runs is empty: pass a dict such as {'sigma = 0.5': results}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    top = max_radius if max_radius is not None else 1.05 * max(float(r.radius.max()) for r in runs.values())
    radii = torch.linspace(0.0, max(top, 1e-3), points, dtype=torch.float64)
    for label, results in runs.items():
        ax.plot(radii.numpy(), certified_accuracy(results, radii).numpy(), label=label)
    ax.set_xlabel("L2 radius (pixel units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(0.0, float(radii[-1]))
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
