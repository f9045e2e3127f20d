"""Claims about the faithfulness of attribution maps: ROAD and ROAR/KAR against controls (model-free maps
and a randomly initialised network's gradient)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import interpret, report, saliency, zoo
from ._core import ROBUST, Claim, make_claim


def claim_road_favours_robust_gradients_over_controls(*, n: int = 500, root=None, seed: int = 0, draws: int = 3,
                                                      fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
                                                      ) -> Claim:
    """ROAD (no retraining) on the Linf-0.3 model: its gradient's LeRF-MoRF gap minus that of the
    best control, per digit and draw of the imputation noise. The controls: the model-free ones
    (image, Sobel edges, random) and the gradient of the same model with every layer
    re-initialised (Adebayo et al.'s randomised-weights control)."""
    test = report.eval_set(root=root, n=n)
    model = zoo.load(ROBUST).eval()
    randomised = interpret.randomize_layers(model, interpret.randomizable_layers(model),
                                            generator=torch.Generator().manual_seed(seed))
    controls = (*interpret.CONTROLS, "random weights")
    maps = {"gradient": saliency.gradient(model, test.x, test.y),
            "random weights": saliency.gradient(randomised, test.x, test.y),
            **{c: interpret.control_attribution(c, test.x, generator=torch.Generator().manual_seed(seed))
               for c in interpret.CONTROLS}}
    result = interpret.road(model, test.x, test.y, maps, fractions=fractions, repeats=draws, seed=seed)
    gaps = interpret.road_gap_per_image(result, per_draw=True)  # name -> (draws, N)
    best = max(controls, key=lambda c: float(gaps[c].mean()))
    return make_claim("road_favours_robust_gradients_over_controls",
                      "Under ROAD (noisy linear imputation, no retraining), the Linf-0.3 model's gradient ranks "
                      "pixels more faithfully for that model than the best control (model-free maps, or the "
                      "gradient of the same network with random weights).",
                      gaps["gradient"] - gaps[best],
                      {"data": test.source, "model": ROBUST, "fractions": list(fractions), "best_control": best,
                       "controls": {"random": "a uniformly random ranking", "image": "the image itself",
                                    "edge": "Sobel edge magnitude of the image",
                                    "random weights": f"gradient of {ROBUST} with every layer re-initialised"},
                       "imputation_noise": f"{draws} draws (seeds {seed}..{seed + draws - 1}); the interval is a "
                                           "two-stage bootstrap over the draws and the digits, widened to contain "
                                           "the t-interval of the per-draw means",
                       "mean_gap": {k: float(v.mean()) for k, v in gaps.items()},
                       "gap_per_draw": {k: [round(float(r), 4) for r in v.mean(1)] for k, v in gaps.items()}})


RESULTS = Path(__file__).resolve().parents[2] / "results" / "interpret"


def _roar_fills(results: Path | None) -> dict:
    path = (RESULTS if results is None else Path(results)) / "roar_fills.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m robustlab.experiments roar_fills` (part of "
                                f"make interpret-results) before measuring the ROAR claims")
    return json.loads(path.read_text())


def _roar_claim(name: str, statement: str, better: str, worse: str, *, fill: str, mode: str, results) -> Claim:
    r = _roar_fills(results)
    key = f"{mode}_per_digit_repeats"
    have = [f for f, e in r["fills"].items() if key in e]
    if fill not in have:
        raise ValueError(f"fill {fill!r} has no per-repeat, per-digit {mode.upper()} scores in roar_fills.json; "
                         f"choose one of {have} or rerun `python -m robustlab.experiments roar_fills` (KAR: with "
                         f"that fill in kar_fills)")
    entry = r["fills"][fill]
    per = entry[key]
    diff = np.asarray(per[better], dtype=np.float64) - np.asarray(per[worse], dtype=np.float64)  # (repeats, N)
    return make_claim(name, statement, diff, {
        "data": r["data"], "fill": fill, "order": "MoRF (ROAR)" if mode == "roar" else "LeRF (KAR)",
        "retraining": f"{r['repeats']} retrainings per point, {r['epochs']} epochs each; the interval is a two-stage "
                      "bootstrap over the retraining seeds and the test digits, widened to contain the t-interval "
                      "of the per-seed means",
        "controls": r.get("controls", {}),
        "scores_per_repeat": {k: entry[f"{mode}_scores"][k] for k in (better, worse)},
        "scores_every_fill": {f: {k: float(np.mean(v)) for k, v in e[f"{mode}_scores"].items()}
                              for f, e in r["fills"].items() if f"{mode}_scores" in e}})


def claim_roar_robust_gradient_beats_standard(*, fill: str = "impute", results: Path | None = None,
                                              root=None) -> Claim:
    """Kim et al.'s ROAR claim with the fill that hides the removed pixels (noisy linear
    imputation, i.e. ROAD with retraining): the Linf-0.3 model's gradient minus the standard
    model's, per test digit."""
    return _roar_claim("roar_robust_gradient_beats_standard",
                       "With retraining and a fill that hides the removed pixels, removing the pixels the Linf-0.3 "
                       "model's gradient ranks highest hurts accuracy more than removing those of the standard "
                       "model's gradient (Kim et al.'s ROAR result).",
                       "gradient (robust)", "gradient (standard)", fill=fill, mode="roar", results=results)


def claim_roar_robust_gradient_beats_image_control(*, fill: str = "impute", results: Path | None = None,
                                                   root=None) -> Claim:
    """The control for the claim above: the same ROAR score, Linf-0.3 gradient minus the image
    itself used as the map (pixel intensity, no model)."""
    return _roar_claim("roar_robust_gradient_beats_image_control",
                       "With retraining and a fill that hides the removed pixels, the Linf-0.3 model's gradient ranks "
                       "pixels better than the image itself used as a map (ROAR).",
                       "gradient (robust)", "image", fill=fill, mode="roar", results=results)


def claim_kar_robust_gradient_beats_image_control(*, fill: str = "impute", results: Path | None = None,
                                                  root=None) -> Claim:
    """KAR (LeRF with retraining) with the imputation fill: keeping the Linf-0.3 gradient's top
    pixels against keeping the brightest ones, per test digit."""
    return _roar_claim("kar_robust_gradient_beats_image_control",
                       "With retraining and a fill that hides the removed pixels, keeping only the pixels the Linf-0.3 "
                       "model's gradient ranks highest preserves accuracy better than keeping the brightest pixels "
                       "(KAR).",
                       "gradient (robust)", "image", fill=fill, mode="kar", results=results)


def claim_kar_robust_gradient_beats_standard(*, fill: str = "impute", results: Path | None = None,
                                             root=None) -> Claim:
    """Kim et al.'s KAR claim with the imputation fill: keeping the Linf-0.3 gradient's top
    pixels against keeping the standard model's, per test digit."""
    return _roar_claim("kar_robust_gradient_beats_standard",
                       "With retraining and a fill that hides the removed pixels, keeping only the pixels the Linf-0.3 "
                       "model's gradient ranks highest preserves accuracy better than keeping those of the standard "
                       "model's gradient (Kim et al.'s KAR result).",
                       "gradient (robust)", "gradient (standard)", fill=fill, mode="kar", results=results)


def claim_kar_robust_gradient_beats_random_weights(*, fill: str = "impute", results: Path | None = None,
                                                   root=None) -> Claim:
    """Adebayo et al.'s control for the KAR claims: keeping the Linf-0.3 gradient's top pixels
    against keeping those of the standard network's gradient with every layer re-initialised."""
    return _roar_claim("kar_robust_gradient_beats_random_weights",
                       "With retraining and a fill that hides the removed pixels, keeping only the pixels the Linf-0.3 "
                       "model's gradient ranks highest preserves accuracy better than keeping those of a randomly "
                       "initialised network's gradient (KAR).",
                       "gradient (robust)", "gradient (random weights)", fill=fill, mode="kar", results=results)


def claim_roar_robust_gradient_beats_random_weights(*, fill: str = "impute", results: Path | None = None,
                                                    root=None) -> Claim:
    """The same control for ROAR: removing the Linf-0.3 gradient's top pixels against removing
    those of a randomly initialised network's gradient."""
    return _roar_claim("roar_robust_gradient_beats_random_weights",
                       "With retraining and a fill that hides the removed pixels, removing the pixels the Linf-0.3 "
                       "model's gradient ranks highest hurts accuracy more than removing those of a randomly "
                       "initialised network's gradient (ROAR).",
                       "gradient (robust)", "gradient (random weights)", fill=fill, mode="roar", results=results)
