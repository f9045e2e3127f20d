"""Claims as code: every result sentence of the course, measured with a control and an uncertainty.

Each ``claim_*`` function measures one claim of the seed papers or the book on the zoo and
returns a :class:`Claim`: the effect, signed so that a positive value is what the sentence
asserts, a 95 % confidence interval (a paired bootstrap over digits) and a verdict from
:func:`verdict`: "supported" when the whole interval is above 0, "not supported" when it is
below, "inconclusive" when it contains 0. A failed or inconclusive claim is a result too, and
the book says so where it states the claim.

``python -m robustlab.claims --out results/claims.json`` (``make interpret-results``) measures
them all and writes a list of their fields with the pages that state each. A page marks a
sentence that asserts a claim with ``<!-- claim: NAME -->``; ``tests/test_claims.py`` fails if
the stored verdict of a claim so marked is not "supported". A page that *reports* a claim
without asserting it (e.g. "this does not hold here") marks it ``<!-- claim-reported: NAME -->``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import attacks, interpret, report, saliency, zoo
from ._checks import check_number
from .interpret.road import ORDERS as ROAD_ORDERS

__all__ = ["VERDICTS", "Claim", "verdict", "paired_bootstrap", "CLAIMS", "PAGES", "MARKER", "marker_problems",
           "pages_stating", "measure_all", "main"]

VERDICTS = ("supported", "not supported", "inconclusive")

STANDARD, ROBUST, L2_ROBUST = "mnist-standard", "mnist-pgd-linf-0.3", "mnist-pgd-l2-2.0"


class Claim(NamedTuple):
    """One measured claim.

    Attributes:
        name: identifier (the function's name without ``claim_``), used by the pages' markers.
        statement: the sentence the measurement tests, as the book would state it.
        effect: the measured effect; positive means the statement holds.
        low, high: its 95 % confidence interval.
        verdict: one of :data:`VERDICTS`.
        detail: how it was measured (models, digits, control, protocol, the compared numbers).
    """

    name: str
    statement: str
    effect: float
    low: float
    high: float
    verdict: str
    detail: dict[str, Any]


def verdict(low: float, high: float) -> str:
    """"supported" if ``low > 0``, "not supported" if ``high < 0``, else "inconclusive"."""
    check_number(low, "low", low=-float("inf"))
    check_number(high, "high", low=low)
    if low > 0:
        return "supported"
    if high < 0:
        return "not supported"
    return "inconclusive"


def paired_bootstrap(diff: Tensor | np.ndarray, *, resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-example differences and its percentile bootstrap interval.

    Args:
        diff: (N,) per-example differences (e.g. metric of model A minus model B on the same
            digits), N >= 2.
        resamples: bootstrap resamples.
        level: confidence level, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(mean, low, high)``.
    """
    d = np.asarray(diff.detach().cpu().double().numpy() if isinstance(diff, Tensor) else diff, dtype=np.float64)
    if d.ndim != 1 or d.size < 2 or not np.isfinite(d).all():
        raise ValueError(f"diff must be a 1-D array of at least 2 finite values, got shape {d.shape}")
    check_number(resamples, "resamples", low=1, integer=True)
    check_number(level, "level", low=0.0, strict=True)
    if not level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _claim(name: str, statement: str, diff: Tensor | np.ndarray, detail: dict[str, Any]) -> Claim:
    mean, low, high = paired_bootstrap(diff)
    return Claim(name, statement, mean, low, high, verdict(low, high), detail)


# --- the claims ---------------------------------------------------------------------------------

def _alignment_claim(name: str, model_name: str, label: str, *, n: int, root) -> Claim:
    test = report.eval_set(root=root, n=n)
    align = {m: interpret.etmann_alignment(saliency.loss_gradient(zoo.load(m), test.x, test.y), test.x)
             for m in (model_name, STANDARD)}
    return _claim(name,
                  f"The loss gradients of the {label} model align better with the image than the standard model's "
                  "(Etmann et al.'s alignment).",
                  align[model_name] - align[STANDARD],
                  {"data": test.source, "metric": "etmann_alignment of the loss gradient",
                   "means": {m: float(a.mean()) for m, a in align.items()}})


def claim_robust_gradients_align_with_image(*, n: int = 1000, root=None) -> Claim:
    """Etmann et al.'s alignment |<x, g>| / (|x| |g|) of the loss gradient, Linf-0.3 PGD model
    minus standard model, paired over the same digits."""
    return _alignment_claim("robust_gradients_align_with_image", ROBUST, "Linf-0.3 adversarially trained",
                            n=n, root=root)


def claim_l2_robust_gradients_align_with_image(*, n: int = 1000, root=None) -> Claim:
    """The same comparison for the L2-2.0 PGD model."""
    return _alignment_claim("l2_robust_gradients_align_with_image", L2_ROBUST, "L2-2.0 adversarially trained",
                            n=n, root=root)


def claim_robust_alignment_beats_random_weights(*, n: int = 1000, root=None, seed: int = 0) -> Claim:
    """The control for alignment: the same architecture with randomised weights (Adebayo et al.),
    whose gradient alignment comes from the architecture alone."""
    test = report.eval_set(root=root, n=n)
    model = zoo.load(ROBUST)
    layers = interpret.sanity.randomizable_layers(model)
    random_model = interpret.randomize_layers(model, layers, generator=torch.Generator().manual_seed(seed))
    trained = interpret.etmann_alignment(saliency.loss_gradient(model, test.x, test.y), test.x)
    control = interpret.etmann_alignment(saliency.loss_gradient(random_model, test.x, test.y), test.x)
    return _claim("robust_alignment_beats_random_weights",
                  "The Linf-0.3 model's loss gradients align better with the image than those of the same "
                  "network with randomised weights: the alignment comes from training, not from the architecture.",
                  trained - control,
                  {"data": test.source, "metric": "etmann_alignment of the loss gradient",
                   "means": {"trained": float(trained.mean()), "random weights": float(control.mean())}})


def _road_per_digit(model, x: Tensor, y: Tensor, attr: Tensor, fractions: tuple[float, ...],
                    seed: int) -> Tensor:
    """Per digit, LeRF area minus MoRF area of correctness (0/1) over the fractions."""
    curves = {}
    for order in ROAD_ORDERS:
        correct = []
        for f in fractions:
            top = interpret.top_pixels(attr, f if order == "morf" else 1.0 - f)
            removed = top if order == "morf" else ~top
            g = torch.Generator().manual_seed(seed)
            imputed = interpret.noisy_linear_impute(x, removed, generator=g)
            with torch.no_grad():
                correct.append((model(imputed).argmax(1) == y).double())
        curves[order] = torch.stack(correct, 1)  # (N, F)
    f = torch.tensor(fractions, dtype=torch.float64)
    area = lambda c: torch.trapezoid(c, f, dim=1) / float(f[-1] - f[0])
    return area(curves["lerf"]) - area(curves["morf"])


def claim_road_favours_robust_gradients_over_controls(*, n: int = 500, root=None, seed: int = 0,
                                                      fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
                                                      ) -> Claim:
    """ROAD (no retraining) on the Linf-0.3 model: its gradient's LeRF-MoRF gap minus that of the
    best model-free control (image, Sobel edges, random), per digit."""
    test = report.eval_set(root=root, n=n)
    model = zoo.load(ROBUST).eval()
    maps = {"gradient": saliency.gradient(model, test.x, test.y),
            **{c: interpret.control_attribution(c, test.x, generator=torch.Generator().manual_seed(seed))
               for c in interpret.CONTROLS}}
    gaps = {k: _road_per_digit(model, test.x, test.y, a, fractions, seed) for k, a in maps.items()}
    best = max(interpret.CONTROLS, key=lambda c: float(gaps[c].mean()))
    return _claim("road_favours_robust_gradients_over_controls",
                  "Under ROAD (noisy linear imputation, no retraining), the Linf-0.3 model's gradient ranks "
                  "pixels more faithfully for that model than the best model-free control.",
                  gaps["gradient"] - gaps[best],
                  {"data": test.source, "model": ROBUST, "fractions": list(fractions), "best_control": best,
                   "imputation_noise": "one draw (seed {}); the interval covers the digits, not the noise".format(seed),
                   "mean_gap": {k: float(v.mean()) for k, v in gaps.items()}})


def claim_clean_accuracy_falls_with_training_eps(*, n: int | None = None, root=None) -> Claim:
    """Clean accuracy of the PGD model trained at Linf 0.1 minus the one trained at 0.3, per digit."""
    test = report.eval_set(root=root, n=n)
    correct = {}
    for m in ("mnist-pgd-linf-0.1", ROBUST):
        model = zoo.load(m)
        with torch.no_grad():
            correct[m] = torch.cat([(model(test.x[b:b + 1000]).argmax(1) == test.y[b:b + 1000]).double()
                                    for b in range(0, len(test.y), 1000)])
    return _claim("clean_accuracy_falls_with_training_eps",
                  "Clean accuracy falls as the training eps rises (PGD training at Linf 0.1 vs 0.3).",
                  correct["mnist-pgd-linf-0.1"] - correct[ROBUST],
                  {"data": test.source, "accuracy": {m: float(c.mean()) for m, c in correct.items()}})


def claim_robust_adversarials_nearer_manifold(*, n: int = 500, eps: float = 2.0, steps: int = 100,
                                              refine_steps: int = 100, root=None, seed: int = 0) -> Claim:
    """Kim et al. §2.1, on the same digits: VAE-manifold distance of the standard model's
    adversarial examples minus the Linf-0.3 model's, over the digits that APGD (L2, ``eps``)
    breaks for both models (same budget)."""
    test = report.eval_set(root=root, n=n)
    vae = zoo.load("mnist-vae")
    dist, fooled = {}, {}
    for m in (STANDARD, ROBUST):
        model = zoo.load(m)
        x_adv = attacks.apgd(model, test.x, test.y, eps=eps, norm="l2", steps=steps,
                             generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            fooled[m] = model(x_adv).argmax(1) != test.y
        dist[m] = interpret.manifold_distance(vae, x_adv, refine_steps=refine_steps)
    both = fooled[STANDARD] & fooled[ROBUST]
    statement = ("Adversarial examples of the Linf-0.3 model lie nearer the data manifold than the standard "
                 "model's (same digits, same L2 budget).")
    if int(both.sum()) < 2:
        return Claim("robust_adversarials_nearer_manifold", statement, 0.0, 0.0, 0.0, "inconclusive",
                     {"data": test.source, "reason": f"only {int(both.sum())} digits broken for both models"})
    return _claim("robust_adversarials_nearer_manifold", statement, (dist[STANDARD] - dist[ROBUST])[both],
                  {"data": test.source, "attack": f"APGD-CE L2 eps {eps}, {steps} steps",
                   "digits_broken_for_both": int(both.sum()),
                   "success_rate": {m: float(f.double().mean()) for m, f in fooled.items()},
                   "mean_distance_on_common_digits": {m: float(d[both].mean()) for m, d in dist.items()}})


def claim_robust_maps_insensitive_to_top_layer(*, n: int = 200, root=None, seed: int = 0) -> Claim:
    """Adebayo et al.'s first cascading step: rank correlation (|map|) of the gradient maps with the
    trained ones after randomising only the logit layer, Linf-0.3 model minus standard model,
    paired over digits. Positive: the robust maps respond less to the learned top layer, i.e.
    they do worse on the sanity check there."""
    test = report.eval_set(root=root, n=n)
    rho, steps = {}, {}
    for m in (ROBUST, STANDARD):
        res = interpret.randomization_test(zoo.load(m), test.x, test.y, lambda mm, x, t: saliency.gradient(mm, x, t),
                                           generator=torch.Generator().manual_seed(seed))
        rho[m] = res.spearman_abs[0]
        steps[m] = {"layers": res.layers, "mean_spearman_abs_per_step": [float(r.mean()) for r in res.spearman_abs]}
    return _claim("robust_maps_insensitive_to_top_layer",
                  "Randomising only the logit layer changes the Linf-0.3 model's gradient maps less than the "
                  "standard model's: on Adebayo et al.'s sanity check the robust maps are the less sensitive "
                  "to what the top of the network learned.",
                  rho[ROBUST] - rho[STANDARD],
                  {"data": test.source, "metric": "Spearman rank correlation of |gradient| with the trained model's",
                   "means": {m: float(r.mean()) for m, r in rho.items()}, "cascade": steps})


def claim_toy_2d_robust_gradients_follow_data(*, seeds: int = 10, n: int = 600, eps: float = 0.1,
                                              root=None) -> Claim:
    """Kim et al. §2.2 on :func:`~robustlab.interpret.kim_2d_data`: per seed (data, initialisation
    and training order), the mean gradient alignment of an L2-PGD-trained MLP minus a standard
    one's; the interval is a bootstrap over seeds (models retrained)."""
    from .train import TrainConfig, fit

    diffs, pairs = [], []
    for seed in range(seeds):
        x, y = interpret.kim_2d_data(n, generator=torch.Generator().manual_seed(seed))
        cos = []
        for fields in (dict(method="standard"), dict(method="pgd", norm="l2", eps=eps, steps=10)):
            model = interpret.toy_mlp(seed=seed)
            fit(model, (x, y), TrainConfig(epochs=20, batch_size=50, lr=1e-2, seed=seed, **fields), progress=False)
            cos.append(float(interpret.gradient_alignment_2d(model, x, y).mean()))
        diffs.append(cos[1] - cos[0])
        pairs.append(cos)
    return _claim("toy_2d_robust_gradients_follow_data",
                  "On data lying along a line in the plane (Kim et al.'s 2-D setting), an adversarially trained "
                  "model's loss gradient points along the data towards the other class more than a standard model's.",
                  np.array(diffs),
                  {"data": f"kim_2d_data, {n} points per seed", "seeds": seeds,
                   "seeds_with_positive_effect": int(sum(d > 0 for d in diffs)),
                   "training": f"20 epochs; PGD L2 eps {eps}",
                   "alignment_per_seed": [{"standard": a, "adversarial": b} for a, b in pairs]})


def claim_robust_maps_set_by_first_layer(*, n: int = 200, root=None, seed: int = 0) -> Claim:
    """Cascading randomisation stopped one layer short: rank correlation (|map|) of the gradient
    maps with the trained ones once every layer *above the first* is random, Linf-0.3 model minus
    standard model, paired over digits. Positive: the robust model's maps owe more of their
    shape to its first layer alone."""
    test = report.eval_set(root=root, n=n)
    rho = {}
    for m in (ROBUST, STANDARD):
        res = interpret.randomization_test(zoo.load(m), test.x, test.y, lambda mm, x, t: saliency.gradient(mm, x, t),
                                           generator=torch.Generator().manual_seed(seed))
        rho[m] = res.spearman_abs[-2]  # every layer randomised except the first
    return _claim("robust_maps_set_by_first_layer",
                  "With every layer above the first randomised, the Linf-0.3 model's gradient maps stay closer to "
                  "the trained maps than the standard model's do: their shape comes largely from the first layer.",
                  rho[ROBUST] - rho[STANDARD],
                  {"data": test.source, "metric": "Spearman rank correlation of |gradient| with the trained model's",
                   "means": {m: float(r.mean()) for m, r in rho.items()}})


CLAIMS: dict[str, Callable[..., Claim]] = {
    "robust_gradients_align_with_image": claim_robust_gradients_align_with_image,
    "l2_robust_gradients_align_with_image": claim_l2_robust_gradients_align_with_image,
    "robust_alignment_beats_random_weights": claim_robust_alignment_beats_random_weights,
    "road_favours_robust_gradients_over_controls": claim_road_favours_robust_gradients_over_controls,
    "clean_accuracy_falls_with_training_eps": claim_clean_accuracy_falls_with_training_eps,
    "robust_adversarials_nearer_manifold": claim_robust_adversarials_nearer_manifold,
    "robust_maps_insensitive_to_top_layer": claim_robust_maps_insensitive_to_top_layer,
    "robust_maps_set_by_first_layer": claim_robust_maps_set_by_first_layer,
    "toy_2d_robust_gradients_follow_data": claim_toy_2d_robust_gradients_follow_data,
}

PAGES = Path(__file__).resolve().parents[1] / "book"


def pages_stating(name: str, book: Path = PAGES) -> list[str]:
    """The book pages (``book/<page>.md``) that carry a marker for claim ``name``."""
    return sorted(f"book/{p.name}" for p in book.glob("*.md")
                  if any(found == name for _, found in MARKER.findall(p.read_text())))


MARKER = re.compile(r"<!-- claim(-reported)?: ([A-Za-z0-9_]+) -->")
"""A page's marker next to a sentence that asserts (``claim:``) or reports (``claim-reported:``) a claim."""


def marker_problems(text: str, stored: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a page's claim markers, given the measured claims (name -> record):
    a marker naming an unknown or unmeasured claim, or one asserting a claim whose verdict is not
    "supported". An empty list means the page asserts only what was measured to hold."""
    problems = []
    for reported, name in MARKER.findall(text):
        if name not in CLAIMS:
            problems.append(f"unknown claim {name!r}; valid values are {', '.join(CLAIMS)}")
        elif name not in stored:
            problems.append(f"claim {name!r} is not measured: run make interpret-results")
        elif not reported and stored[name]["verdict"] != "supported":
            c = stored[name]
            problems.append(f"asserts {name!r}, whose measured verdict is {c['verdict']!r} (effect "
                            f"{c['effect']:+.3g} [{c['low']:+.3g}, {c['high']:+.3g}]): mark it claim-reported and "
                            "say so, or change the sentence")
    return problems


def measure_all(names: list[str] | None = None, *, root=None, out: Path | None = None) -> list[dict[str, Any]]:
    """Measures the claims ``names`` (default: all), each as a dict of :class:`Claim`'s fields plus
    ``pages`` and ``seconds``; with ``out``, the list is rewritten after each claim (a killed run
    keeps what it finished, and a rerun skips the claims already in the file)."""
    names = list(CLAIMS) if names is None else names
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claims {unknown}; valid values are {', '.join(CLAIMS)}")
    done: dict[str, dict[str, Any]] = {}
    if out is not None and out.exists():
        done = {c["name"]: c for c in json.loads(out.read_text())}
    for name in names:
        if name in done:
            done[name]["pages"] = pages_stating(name)  # the pages may have changed since
            continue
        start = time.perf_counter()
        claim = CLAIMS[name](root=root)
        record = {**claim._asdict(), "pages": pages_stating(name), "torch": torch.__version__,
                  "seconds": round(time.perf_counter() - start, 1)}
        done[name] = record
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps([done[k] for k in CLAIMS if k in done], indent=2) + "\n")
        print(f"{name}: effect {claim.effect:+.4f} [{claim.low:+.4f}, {claim.high:+.4f}] -> {claim.verdict} "
              f"({record['seconds']} s)")
    if out is not None and done:
        out.write_text(json.dumps([done[k] for k in CLAIMS if k in done], indent=2) + "\n")
    return [done[k] for k in CLAIMS if k in done]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robustlab.claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"claims to measure (default: all): {', '.join(CLAIMS)}")
    parser.add_argument("--out", type=Path, default=Path("results/claims.json"), help="output file")
    parser.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    parser.add_argument("--fresh", action="store_true", help="remeasure claims already in --out")
    args = parser.parse_args(argv)
    if args.fresh and args.out.exists():
        args.out.unlink()
    try:
        measure_all(args.names or None, root=args.data_root, out=args.out)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
