"""The registry of claims, the pages' markers, and measuring them all into one file."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ._core import Claim
from .alignment import (
    claim_alignment_grows_with_boundary_distance,
    claim_l2_robust_gradients_align_with_image,
    claim_madry_l2_gradients_align_with_image,
    claim_madry_linf_gradients_align_with_image,
    claim_robust_alignment_beats_random_weights,
    claim_robust_gradients_align_with_image,
)
from .faithfulness import (
    claim_kar_robust_gradient_beats_image_control,
    claim_kar_robust_gradient_beats_standard,
    claim_road_favours_robust_gradients_over_controls,
    claim_roar_robust_gradient_beats_image_control,
    claim_roar_robust_gradient_beats_standard,
)
from .generation import (
    claim_l2_robust_generation_judged_by_madry_model,
    claim_l2_robust_generation_looks_like_target,
    claim_linf_robust_generation_looks_like_target,
)
from .manifold import claim_robust_adversarials_nearer_manifold, claim_robust_adversarials_nearer_vaegan_manifold
from .sanity import claim_robust_maps_insensitive_to_top_layer, claim_robust_maps_set_by_first_layer
from .toys import claim_toy_2d_robust_gradients_follow_data
from .tradeoff import claim_clean_accuracy_falls_with_training_eps

__all__ = ["CLAIMS", "PAGES", "MARKER", "marker_problems", "pages_stating", "measure_all", "main"]

_DOC = ("Measures the course's claims (robustlab.claims), each with a control, a 95 % interval and a verdict, "
        "into one JSON file; resumable claim by claim.")

CLAIMS: dict[str, Callable[..., Claim]] = {
    "robust_gradients_align_with_image": claim_robust_gradients_align_with_image,
    "l2_robust_gradients_align_with_image": claim_l2_robust_gradients_align_with_image,
    "madry_linf_gradients_align_with_image": claim_madry_linf_gradients_align_with_image,
    "madry_l2_gradients_align_with_image": claim_madry_l2_gradients_align_with_image,
    "robust_alignment_beats_random_weights": claim_robust_alignment_beats_random_weights,
    "road_favours_robust_gradients_over_controls": claim_road_favours_robust_gradients_over_controls,
    "roar_robust_gradient_beats_standard": claim_roar_robust_gradient_beats_standard,
    "roar_robust_gradient_beats_image_control": claim_roar_robust_gradient_beats_image_control,
    "kar_robust_gradient_beats_image_control": claim_kar_robust_gradient_beats_image_control,
    "kar_robust_gradient_beats_standard": claim_kar_robust_gradient_beats_standard,
    "clean_accuracy_falls_with_training_eps": claim_clean_accuracy_falls_with_training_eps,
    "robust_adversarials_nearer_manifold": claim_robust_adversarials_nearer_manifold,
    "robust_adversarials_nearer_vaegan_manifold": claim_robust_adversarials_nearer_vaegan_manifold,
    "robust_maps_insensitive_to_top_layer": claim_robust_maps_insensitive_to_top_layer,
    "robust_maps_set_by_first_layer": claim_robust_maps_set_by_first_layer,
    "toy_2d_robust_gradients_follow_data": claim_toy_2d_robust_gradients_follow_data,
    "alignment_grows_with_boundary_distance": claim_alignment_grows_with_boundary_distance,
    "l2_robust_generation_looks_like_target": claim_l2_robust_generation_looks_like_target,
    "linf_robust_generation_looks_like_target": claim_linf_robust_generation_looks_like_target,
    "l2_robust_generation_judged_by_madry_model": claim_l2_robust_generation_judged_by_madry_model,
}

PAGES = Path(__file__).resolve().parents[2] / "book"


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
    parser = argparse.ArgumentParser(prog="python -m robustlab.claims", description=_DOC,
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
