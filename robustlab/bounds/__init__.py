"""Certified bounds and verification for feed-forward ReLU networks.

- ``interval_bounds``: interval bound propagation (IBP; Gowal et al., 2018);
- ``linear_bounds``: linear relaxation by back-substitution (CROWN; Zhang et al., 2018), also of a
  specification ``C @ logits``;
- ``verify``: certifies, falsifies or gives up per example, with IBP, CROWN or an exact
  mixed-integer program (``"milp"``; Tjeng et al., 2019);
- ``minimum_margin``: the exact smallest margin over the Linf ball and the point attaining it;
- ``as_dense``: the same model as ``Flatten``, ``Linear`` and ``ReLU`` layers (convolutions
  unrolled into matrices), for teaching and for code that handles fully connected networks only;
- ``worst_case_logits``: the interval bound as a differentiable function of the weights, for
  certified training (``TrainConfig(method="ibp")``), and ``crown_ibp_logits``, its mixture with
  a linear bound built on interval pre-activation bounds (``method="crown_ibp"``; Zhang et al., 2020).

They share the contract of the attacks (see CONVENTIONS.md): images ``x`` are (N, C, H, W) in
[0, 1], ``eps`` is in pixel units, the threat model is the eps-ball intersected with [0, 1], and
the model is read, never run in training mode or changed. Models are ``nn.Sequential`` (nested
ones allowed) of ``robustlab.models.Normalize``, ``nn.Linear``, ``nn.Conv2d``, ``nn.ReLU`` and
``nn.Flatten`` layers, such as ``SmallCNN`` and ``MLP``; other layers (``MaxPool2d`` in
``MadryCNN``) are rejected by name and position.
"""

from ._layers import NORMS, layers
from .dense import as_dense
from .interval import Bounds, interval_bounds
from .linear import INTERMEDIATE, linear_bounds
from .milp import MinimumMargin, minimum_margin
from .training import crown_ibp_logits, worst_case_logits
from .verify import METHODS, STATUSES, Verification, verify

__all__ = ["Bounds", "interval_bounds", "linear_bounds", "Verification", "verify", "MinimumMargin",
           "minimum_margin", "worst_case_logits", "crown_ibp_logits", "as_dense", "layers", "NORMS", "INTERMEDIATE",
           "METHODS", "STATUSES"]
