"""The robustness–interpretability experiments, one concept a module:

- ``roar``: ROAR and KAR (Hooker et al. 2019; used by Kim, Seo & Jeon 2019): ``mask_top``,
  ``roar_kar``, ``roar_kar_scores``.
- ``road``: ROAD (Rong et al. 2022), removal with noisy linear imputation, no retraining needed:
  ``noisy_linear_impute``, ``road``, ``road_scores``, ``road_gap_per_image``.
- ``controls``: model-free attributions every benchmark runs beside the maps: ``random_attribution``,
  ``image_attribution``, ``edge_attribution``.
- ``sanity``: Adebayo et al.'s (2018) model parameter randomisation test: ``randomization_test``.
- ``alignment``: numbers for "perceptually aligned" saliency: ``alignment``, ``etmann_alignment``,
  ``mass_near_digit``.
- ``toys``: Kim et al.'s 2-D experiment (``kim_2d_data``, ``toy_2d_data``, ``toy_mlp``, ``gradient_alignment_2d``,
  ``plot_toy_2d``) and Tsipras et al.'s trade-off toy (``tsipras_data``, ``tsipras_accuracies``).
- ``generation``: large-eps targeted attacks as generation (Tsipras et al., section 5):
  ``targeted_generation`` (APGD or PGD), ``Ensemble`` (a judge of several models).
- ``manifold``: distance to a VAE's learned manifold (Kim et al., section 2.1): ``project``,
  ``manifold_distance``; the VAE and its training live beside it in :mod:`robustlab.models`.

Transfer attacks (Ross & Doshi-Velez 2018) are evaluation: ``transfer_matrix`` lives in
:mod:`robustlab.evaluate` and is importable here too. Every public name of the submodules is
importable from ``robustlab.interpret``.
"""

from __future__ import annotations

from ..evaluate import transfer_matrix
from ..models import train_vae, vae_loss
from ._common import top_pixels
from .alignment import alignment, etmann_alignment, mass_near_digit
from .controls import CONTROLS, control_attribution, edge_attribution, image_attribution, random_attribution
from .generation import OPTIMISERS, Ensemble, GenerationResult, targeted_generation
from .manifold import manifold_distance, project
from .road import RoadResult, noisy_linear_impute, road, road_gap_per_image, road_scores
from .roar import FILLS, FRACTIONS, RoarKarResult, fill_removed, mask_top, roar_kar, roar_kar_scores
from .sanity import RandomizationResult, randomizable_layers, randomization_test, randomize_layers, rank_correlation
from .toys import (
    gradient_alignment_2d,
    kim_2d_data,
    plot_toy_2d,
    toy_2d_data,
    toy_mlp,
    tsipras_accuracies,
    tsipras_data,
)

__all__ = [
    "FRACTIONS",
    "FILLS",
    "top_pixels",
    "mask_top",
    "fill_removed",
    "RoarKarResult",
    "roar_kar",
    "roar_kar_scores",
    "noisy_linear_impute",
    "RoadResult",
    "road",
    "road_scores",
    "road_gap_per_image",
    "CONTROLS",
    "control_attribution",
    "random_attribution",
    "image_attribution",
    "edge_attribution",
    "RandomizationResult",
    "randomization_test",
    "randomizable_layers", "randomize_layers",
    "rank_correlation",
    "alignment",
    "etmann_alignment",
    "mass_near_digit",
    "transfer_matrix",
    "kim_2d_data",
    "toy_2d_data",
    "toy_mlp",
    "gradient_alignment_2d",
    "plot_toy_2d",
    "tsipras_data",
    "tsipras_accuracies",
    "targeted_generation",
    "Ensemble",
    "OPTIMISERS",
    "GenerationResult",
    "vae_loss",
    "train_vae",
    "project",
    "manifold_distance",
]
