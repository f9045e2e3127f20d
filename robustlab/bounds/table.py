"""The lower/upper-bound table: what attacks and certificates say about the same digits.

For each model and Linf radius, on the same test digits: clean accuracy; the attack suite's
robust accuracy (an *upper* bound on the true robust accuracy: an attack can only show a point is
not robust); IBP- and CROWN-verified accuracy (*lower* bounds: a certificate can only show a
point is robust); and, for networks small enough, the exact answer from mixed-integer
programming. The gap between the two kinds of bound is what neither side knows.

``python -m robustlab.bounds.table --out results/bounds`` (``make bounds-results``) trains the
four small MLPs (standard, PGD and twice IBP training on the same digits), runs every method and
writes ``table.json`` after every finished row, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .. import data, evaluate, masking, models, report, stats, zoo
from ..train import TrainConfig, fit
from .verify import verify

__all__ = ["bound_row", "train_small_mlps", "run_table", "SMALL_MLP", "main"]

# The small MLP of the table: 784 -> 100 -> 100 -> 10, small enough for exact MILP verification.
SMALL_MLP = dict(hidden=100)
ZOO_MODELS = ("mnist-standard", "mnist-pgd-linf-0.3", "mnist-ibp-linf-0.1", "mnist-ibp-linf-0.3")


def bound_row(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, exact: bool = False,
              time_limit: float = 10.0, suite_version: str = "standard", seed: int = 0) -> dict[str, Any]:
    """One row of the table: every method on the same digits at Linf ``eps``.

    The exact MILP runs only on the digits that neither the attack suite broke nor CROWN
    certified: on the others the truth is already known (a counterexample, or a certificate).

    Returns:
        A JSON-ready dict: counts and accuracies for ``clean``, ``suite`` (upper bound), ``crown``
        and ``ibp`` (lower bounds), and with ``exact=True`` the MILP's ``exact_robust``,
        ``exact_unknown`` and the per-status counts; seconds per method; per-digit status lists.
    """
    n = x.shape[0]
    row: dict[str, Any] = {"eps": eps, "n": n}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suite = evaluate.attack_suite(model, x, y, norm="linf", eps=eps, version=suite_version, seed=seed,
                                      batch_size=n, progress=False)
    row["suite_seconds"] = round(time.perf_counter() - t0, 1)
    row["masking_warnings"] = sorted({str(w.message) for w in caught if issubclass(w.category, masking.MaskingWarning)})
    clean, robust = suite.clean, suite.robust
    out = {"clean": clean, "suite": robust}
    for method in ("ibp", "crown"):
        t0 = time.perf_counter()
        out[method] = verify(model, x, y, eps=eps, method=method).certified.cpu()
        row[f"{method}_seconds"] = round(time.perf_counter() - t0, 1)
    # Soundness of the whole table: a certified digit is never broken by an attack.
    for method in ("ibp", "crown"):
        if bool((out[method] & ~robust.cpu()).any()):
            raise RuntimeError(f"{method} certified a digit that the attack suite broke: a bug in the bounds")
    if exact:
        gap = (robust.cpu() & ~out["crown"]).nonzero().squeeze(1)
        status = ["falsified" if not bool(robust[i]) else "certified" for i in range(n)]
        t0 = time.perf_counter()
        if gap.numel():
            v = verify(model, x[gap], y[gap], eps=eps, method="milp", time_limit=time_limit)
            for i, s in zip(gap.tolist(), v.status):
                status[i] = s
        row["milp_seconds"] = round(time.perf_counter() - t0, 1)
        row["milp_solved"] = int(gap.numel())
        exact_robust = torch.tensor([s == "certified" for s in status])
        exact_unknown = torch.tensor([s == "unknown" for s in status])
        out["exact"] = exact_robust
        row["exact_unknown"] = int(exact_unknown.sum())
        # The truth lies between the certified count and the attack's count.
        if bool((exact_robust & ~robust.cpu()).any()) or bool((out["crown"] & ~exact_robust).any()):
            raise RuntimeError("MILP's exact answer contradicts the attack or CROWN: a bug")
    for key, mask in out.items():
        k = int(mask.sum())
        low, high = stats.proportion_interval(k, n)
        row[key] = {"count": k, "accuracy": k / n, "interval95": [low, high]}
    row["broken_by"] = suite.counts()
    return row


def mlp_recipes(epochs: int = 20, seed: int = 0) -> dict[str, TrainConfig]:
    """The table's small MLPs (``SMALL_MLP``), all trained on the same digits: standard, PGD (Linf
    0.3, ramped), and IBP twice with Gowal et al.'s schedule - at 0.4 for verification at 0.3, as
    they train, and at 0.2 for verification at 0.1 (the MLP trained at 0.4 collapses to small
    margins: it certifies few digits at any radius, see the table)."""
    base = dict(epochs=epochs, batch_size=100, lr=1e-3, schedule="cosine", seed=seed)
    return {
        "mlp-standard": TrainConfig(method="standard", **base),
        "mlp-pgd-linf-0.3": TrainConfig(method="pgd", eps=0.3, steps=10, eps_ramp_epochs=epochs // 4, **base),
        "mlp-ibp-linf-0.3": TrainConfig(method="ibp", eps=0.4, warmup_epochs=1, eps_ramp_epochs=epochs // 2,
                                        **base),
        "mlp-ibp-linf-0.1": TrainConfig(method="ibp", eps=0.2, warmup_epochs=1, eps_ramp_epochs=epochs // 2,
                                        **base),
    }


def train_small_mlps(x: Tensor, y: Tensor, *, epochs: int = 20, seed: int = 0, names: Sequence[str] | None = None,
                     progress: bool = False) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """Trains the MLPs of :func:`mlp_recipes` (those in ``names``, default all) on ``(x, y)``."""
    recipes = mlp_recipes(epochs, seed)
    out = {}
    for name in recipes if names is None else names:
        config = recipes[name]
        torch.manual_seed(seed)
        model = models.create("mlp", **SMALL_MLP)
        result = fit(model, (x, y), config, progress=progress)
        out[name] = (model, {"config": config.to_dict(), "seconds": round(result.seconds, 1),
                             "stopped": result.stopped})
    return out


def run_table(out_dir: str | Path, *, n: int = 100, train_n: int = 20000, epochs: int = 20,
              eps_values: tuple[float, ...] = (0.1, 0.3), time_limit: float = 10.0, root=None,
              zoo_models: tuple[str, ...] = ZOO_MODELS, progress: bool = True) -> dict[str, Any]:
    """Runs the whole table and writes ``out_dir/table.json`` after every row (resuming rows
    already there with the same settings, except a zoo model's rows whose weights changed since).
    MILP runs for the small MLPs only."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "table.json"
    test = report.eval_set(root=root, n=n)
    settings = {"n": n, "data": test.source, "train_n": train_n, "epochs": epochs, "eps": list(eps_values),
                "time_limit": time_limit, "torch": torch.__version__, "small_mlp": SMALL_MLP,
                "suite": evaluate.describe_suite("standard")}
    table: dict[str, Any] = {"settings": settings, "models": {}, "rows": []}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            table = old
    # A zoo model's rows carry the sha256 of the weights they were computed with; rows of a model
    # rebuilt since then are stale and computed again.
    current = {name: zoo.card(name)["sha256"] for name in zoo_models if name in zoo.names()}
    table["rows"] = [r for r in table["rows"] if r["model"] not in current or r.get("sha256") == current[r["model"]]]
    done = {(r["model"], r["eps"]) for r in table["rows"]}

    def save() -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(table, indent=1) + "\n")
        tmp.replace(path)

    candidates: dict[str, tuple[nn.Module, bool]] = {}
    mlp_dir = out_dir / "mlps"
    names = list(mlp_recipes(epochs))
    missing = [k for k in names if not ((mlp_dir / f"{k}.pt").exists() and k in table["models"])]
    if missing:  # only the MLPs not trained yet (a killed run keeps the finished ones)
        full = data.load("mnist", "train", root=root, download=False, exclude_embedded=True)
        trained = train_small_mlps(full.x[:train_n], full.y[:train_n], epochs=epochs, names=missing,
                                   progress=progress)
        mlp_dir.mkdir(parents=True, exist_ok=True)
        for k, (m, info) in trained.items():
            torch.save(m.state_dict(), mlp_dir / f"{k}.pt")
            table["models"][k] = info
        save()
    for name in names:
        model = models.create("mlp", **SMALL_MLP)
        model.load_state_dict(torch.load(mlp_dir / f"{name}.pt", weights_only=True))
        candidates[name] = (model.eval(), True)
    for name in zoo_models:
        if name in zoo.names():
            candidates[name] = (zoo.load(name), False)
    order = {name: i for i, name in enumerate(candidates)}
    for name, (model, exact) in candidates.items():
        for eps in eps_values:
            if (name, eps) in done:
                continue
            row = bound_row(model, test.x, test.y, eps=eps, exact=exact, time_limit=time_limit)
            row["model"] = name
            if name in current:
                row["sha256"] = current[name]
            table["rows"].append(row)
            table["rows"].sort(key=lambda r: (order.get(r["model"], len(order)), r["eps"]))
            save()
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robustlab.bounds.table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/bounds"))
    parser.add_argument("-n", type=int, default=100, help="test digits (the first N)")
    parser.add_argument("--train-n", type=int, default=20000, help="training digits for the small MLPs")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=10.0, help="MILP seconds per digit")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    run_table(args.out, n=args.n, train_n=args.train_n, epochs=args.epochs, time_limit=args.time_limit,
              root=args.data_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
