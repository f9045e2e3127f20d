"""Claims as code: every result sentence of the course, measured with a control and an uncertainty.

Each ``claim_*`` function measures one claim of the seed papers or the book on the zoo and
returns a :class:`Claim`: the effect, signed so that a positive value is what the sentence
asserts, a 95 % confidence interval (a bootstrap over digits; over seeds for the 2-D toy, whose
models are retrained per seed; for ROAR/KAR a two-stage bootstrap over the retraining seeds and
the test digits, and for ROAD over the imputation-noise draws and the digits, each widened to
contain the t-interval of the per-seed means) and a verdict from
:func:`verdict`: "supported" when the whole interval is above 0, "not supported" when it is
below, "inconclusive" when it contains 0. A failed or inconclusive claim is a result too, and
the book says so where it states the claim.

``python -m robustlab.claims --out results/claims.json`` (``make interpret-results``) measures
them all and writes a list of their fields with the pages that state each. A page marks a
sentence that asserts a claim with ``<!-- claim: NAME -->``; ``tests/test_claims.py`` fails if
the stored verdict of a claim so marked is not "supported". A page that *reports* a claim
without asserting it (e.g. "this does not hold here") marks it ``<!-- claim-reported: NAME -->``.

One file per subject: ``alignment`` (Etmann et al.), ``faithfulness`` (ROAD, ROAR), ``sanity``
(Adebayo et al.), ``manifold`` and ``toys`` (Kim et al.), ``generation`` and ``tradeoff``
(Tsipras et al.); ``registry`` holds the list, the markers and :func:`measure_all`.
"""


from ._core import L2_ROBUST, ROBUST, STANDARD, VERDICTS, Claim, bootstrap, make_claim, paired_bootstrap, verdict
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
    JUDGE,
    MADRY_JUDGE,
    claim_l2_robust_generation_judged_by_madry_model,
    claim_l2_robust_generation_looks_like_target,
    claim_linf_robust_generation_looks_like_target,
)
from .manifold import (
    claim_l2_robust_adversarials_nearer_manifold,
    claim_robust_adversarials_nearer_manifold,
    claim_robust_adversarials_nearer_vaegan_manifold,
)
from .registry import CLAIMS, MARKER, PAGES, main, marker_problems, markers, measure_all, pages_stating
from .sanity import (
    claim_robust_maps_changed_most_by_first_layer,
    claim_robust_maps_insensitive_to_top_layer,
    claim_robust_maps_set_by_first_layer,
)
from .toys import claim_toy_2d_robust_gradients_follow_data
from .tradeoff import claim_clean_accuracy_falls_with_training_eps

__all__ = ["VERDICTS", "Claim", "verdict", "paired_bootstrap", "bootstrap", "make_claim", "CLAIMS", "PAGES",
           "MARKER", "markers", "marker_problems", "pages_stating", "measure_all", "main", "JUDGE", "STANDARD",
           "ROBUST",
           "L2_ROBUST",
           "claim_alignment_grows_with_boundary_distance",
           "claim_l2_robust_gradients_align_with_image",
           "claim_madry_linf_gradients_align_with_image",
           "claim_madry_l2_gradients_align_with_image",
           "claim_l2_robust_generation_judged_by_madry_model", "MADRY_JUDGE",
           "claim_robust_alignment_beats_random_weights",
           "claim_robust_gradients_align_with_image", "claim_robust_maps_changed_most_by_first_layer",
           "claim_l2_robust_adversarials_nearer_manifold",
           "claim_road_favours_robust_gradients_over_controls",
           "claim_roar_robust_gradient_beats_standard",
           "claim_roar_robust_gradient_beats_image_control",
           "claim_kar_robust_gradient_beats_image_control",
           "claim_kar_robust_gradient_beats_standard",
           "claim_roar_robust_gradient_beats_random_weights", "claim_kar_robust_gradient_beats_random_weights",
           "claim_l2_robust_generation_looks_like_target",
           "claim_linf_robust_generation_looks_like_target",
           "claim_robust_adversarials_nearer_manifold", "claim_robust_adversarials_nearer_vaegan_manifold",
           "claim_robust_maps_insensitive_to_top_layer",
           "claim_robust_maps_set_by_first_layer",
           "claim_toy_2d_robust_gradients_follow_data",
           "claim_clean_accuracy_falls_with_training_eps",
]
