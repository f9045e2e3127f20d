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
    claim_kar_robust_gradient_beats_random_weights,
    claim_kar_robust_gradient_beats_standard,
    claim_road_favours_robust_gradients_over_controls,
    claim_roar_robust_gradient_beats_image_control,
    claim_roar_robust_gradient_beats_random_weights,
    claim_roar_robust_gradient_beats_standard,
)
from .generation import (
    claim_l2_robust_generation_judged_by_madry_model,
    claim_l2_robust_generation_looks_like_target,
    claim_linf_robust_generation_looks_like_target,
)
from .manifold import (
    claim_l2_robust_adversarials_nearer_manifold,
    claim_robust_adversarials_nearer_manifold,
    claim_robust_adversarials_nearer_vaegan_manifold,
)
from .sanity import (
    claim_robust_maps_changed_most_by_first_layer,
    claim_robust_maps_insensitive_to_top_layer,
    claim_robust_maps_set_by_first_layer,
)
from .toys import claim_toy_2d_robust_gradients_follow_data
from .tradeoff import claim_clean_accuracy_falls_with_training_eps

__all__ = ["CLAIMS", "PAGES", "MARKER", "markers", "marker_problems", "pages_stating", "measure_all", "main"]

_DOC = ("Measures the course's claims (robustlab.claims), each with a control, a 95 % interval and a verdict, "
        "into one JSON file (claims not named keep their stored records); a killed run resumes claim by claim.")

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
    "roar_robust_gradient_beats_random_weights": claim_roar_robust_gradient_beats_random_weights,
    "kar_robust_gradient_beats_random_weights": claim_kar_robust_gradient_beats_random_weights,
    "clean_accuracy_falls_with_training_eps": claim_clean_accuracy_falls_with_training_eps,
    "robust_adversarials_nearer_manifold": claim_robust_adversarials_nearer_manifold,
    "robust_adversarials_nearer_vaegan_manifold": claim_robust_adversarials_nearer_vaegan_manifold,
    "l2_robust_adversarials_nearer_manifold": claim_l2_robust_adversarials_nearer_manifold,
    "robust_maps_insensitive_to_top_layer": claim_robust_maps_insensitive_to_top_layer,
    "robust_maps_set_by_first_layer": claim_robust_maps_set_by_first_layer,
    "robust_maps_changed_most_by_first_layer": claim_robust_maps_changed_most_by_first_layer,
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
                  if any(found == name for _, found in markers(p.read_text())[0]))


MARKER = re.compile(r"<!--\s*claim(-reported)?\s*:\s*(.*?)\s*-->", re.IGNORECASE | re.DOTALL)
"""A page's marker next to a sentence that asserts (``claim:``) or reports (``claim-reported:``)
one claim or several (separated by commas): ``<!-- claim: NAME -->``."""

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_NAME = re.compile(r"[a-z0-9_]+")


def markers(text: str) -> tuple[list[tuple[bool, str]], list[str]]:
    """The claim markers of a page: ``([(reported, name), ...], problems)``. Every HTML comment
    that mentions a claim must be a well-formed marker: one that is not (a misspelt keyword, a
    name with other characters, no name) is a problem, so a marker cannot be dodged by its
    spelling."""
    found, problems = [], []
    for comment in _COMMENT.findall(text):
        if "claim" not in comment.lower():
            continue
        m = MARKER.fullmatch(comment)
        names = [n for n in re.split(r"[,\s]+", m.group(2)) if n] if m else []
        if m is None or not names or any(not _NAME.fullmatch(n) for n in names):
            problems.append(f"malformed claim marker {comment!r}: write <!-- claim: NAME --> or "
                            "<!-- claim-reported: NAME --> (lower-case names, several separated by commas)")
            continue
        found += [(bool(m.group(1)), n) for n in names]
    return found, problems


def marker_problems(text: str, stored: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a page's claim markers, given the measured claims (name -> record):
    a malformed marker, a marker naming an unknown or unmeasured claim, or one asserting a claim
    whose verdict is not "supported". An empty list means the page asserts only what was measured
    to hold."""
    found, problems = markers(text)
    for reported, name in found:
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
    ``pages`` and ``seconds``, and returns every claim of ``out`` with these replaced.

    Every call remeasures the claims it names: results already in ``out`` are never reused, so
    changed code or experiments cannot leave stale verdicts behind. With ``out``, progress goes to
    a hidden file beside it (``.<name>.partial.json``) after each claim, and a call with the same
    ``names`` after a kill resumes from there; ``out`` is rewritten once, at the end.
    """
    names = list(CLAIMS) if names is None else list(names)
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claims {unknown}; valid values are {', '.join(CLAIMS)}")
    kept: dict[str, dict[str, Any]] = {}
    done: dict[str, dict[str, Any]] = {}
    partial = None
    if out is not None:
        out = Path(out)
        partial = partial_path(out)
        if out.exists():
            kept = {c["name"]: c for c in json.loads(out.read_text()) if c["name"] in CLAIMS}
        if partial.exists():
            saved = json.loads(partial.read_text())
            if saved.get("names") == names:
                done = {c["name"]: c for c in saved["claims"]}
    for name in names:
        if name in done:
            continue
        start = time.perf_counter()
        claim = CLAIMS[name](root=root)
        if claim.name != name:
            raise ValueError(f"claim function for {name!r} returned a claim named {claim.name!r}; they must agree")
        done[name] = {**claim._asdict(), "pages": [], "torch": torch.__version__,
                      "seconds": round(time.perf_counter() - start, 1)}
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"names": names, "claims": list(done.values())}) + "\n")
        print(f"{name}: effect {claim.effect:+.4f} [{claim.low:+.4f}, {claim.high:+.4f}] -> {claim.verdict} "
              f"({done[name]['seconds']} s)")
    merged = {**kept, **done}
    for name, record in merged.items():
        record["pages"] = pages_stating(name)  # the pages may have changed since
    result = [merged[k] for k in CLAIMS if k in merged]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        partial.unlink(missing_ok=True)
    return result


def partial_path(out: Path) -> Path:
    """Where :func:`measure_all` keeps an unfinished run's claims: ``.<name>.partial.json`` beside ``out``."""
    return Path(out).parent / f".{Path(out).stem}.partial.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robustlab.claims", description=_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"claims to measure (default: all): {', '.join(CLAIMS)}")
    parser.add_argument("--out", type=Path, default=Path("results/claims.json"), help="output file")
    parser.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore an interrupted run's progress (the hidden partial file beside --out) and start "
                             "over; finished runs are never reused")
    args = parser.parse_args(argv)
    if args.fresh:
        partial_path(args.out).unlink(missing_ok=True)
    try:
        measure_all(args.names or None, root=args.data_root, out=args.out)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
