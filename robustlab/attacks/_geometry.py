"""The threat models' geometry: one small object per norm ball, shared by every attack.

Each geometry knows how to draw a uniform random start in its eps-ball, how to take a steepest
ascent step of a given length (the direction that increases a linearised loss the most per unit
of the norm), how to measure a perturbation and how to project back onto the ball intersected
with the image box [0, 1]. The attacks, adversarial training and the grader all use these
objects, so a change to the Linf or L2 geometry happens in one place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice

__all__ = ["Geometry", "Linf", "L2", "NORMS", "geometry", "default_alpha", "pgd_step"]

NORMS = ("linf", "l2")

# Below this, a gradient or perturbation norm counts as zero (it avoids 0/0 in the L2 geometry).
TINY = 1e-12


def _per_example(v: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, ..., 1), broadcastable against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class Geometry:
    """The Lp ball of one norm; subclasses fill in the four operations."""

    name: str = ""
    dual: str = ""  # the norm that measures gradients: max over the ball of <g, delta> = eps * ||g||_dual

    def norm(self, delta: Tensor) -> Tensor:
        """The norm of each example's perturbation, (N,)."""
        raise NotImplementedError

    def dual_norm(self, grad: Tensor) -> Tensor:
        """The dual norm of each example's gradient, (N,)."""
        raise NotImplementedError

    def direction(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for ``grad``, same shape; zero where grad is."""
        raise NotImplementedError

    def step(self, x_adv: Tensor, grad: Tensor, alpha: float | Tensor) -> Tensor:
        """``x_adv + alpha * direction(grad)``, not projected. ``alpha`` may be (N,) per example."""
        if isinstance(alpha, Tensor) and alpha.dim() > 0:
            return torch.addcmul(x_adv, self.direction(grad), _per_example(alpha, x_adv))
        return x_adv.add(self.direction(grad), alpha=float(alpha))

    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        """The point of the eps-ball around ``x`` (intersected with [0, 1]) for ``x_adv``."""
        raise NotImplementedError

    def projector(self, x: Tensor, eps: float | Tensor):
        """``project(., x, eps)`` for a fixed ball, as a function for loops that project many
        times: it may precompute what every projection onto that ball shares (the Linf box) and
        it may overwrite its argument (pass a tensor the caller owns, not one it still needs)."""
        return lambda x_adv: self.project(x_adv, x, eps)

    def random_start(self, x: Tensor, eps: float, *, restarts: int = 1,
                     generator: torch.Generator | None = None) -> Tensor:
        """Perturbations drawn uniformly from the eps-ball, (N, restarts, C, H, W).

        All randomness comes from one ``torch.rand`` call laid out example-major, so on the CPU
        an example gets the same starts whether it is attacked alone or in a batch (same
        generator state). Add to ``x`` and clamp to [0, 1] to get a starting point.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linf(Geometry):
    """The Linf ball: steepest ascent is the gradient's sign, projection a clamp."""

    name, dual = "linf", "l1"

    def norm(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).abs().amax(dim=1)

    def dual_norm(self, grad: Tensor) -> Tensor:
        return grad.flatten(1).abs().sum(dim=1)

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        e = eps if not isinstance(eps, Tensor) or eps.dim() == 0 else _per_example(eps, x)
        return torch.minimum(torch.maximum(x_adv, x - e), x + e).clamp_(0.0, 1.0)

    def projector(self, x: Tensor, eps: float | Tensor):
        # The ball intersected with [0, 1] is one box: projecting is a single clamp.
        e = eps if not isinstance(eps, Tensor) or eps.dim() == 0 else _per_example(eps, x)
        lo, hi = (x - e).clamp_(min=0.0), (x + e).clamp_(max=1.0)
        return lambda x_adv: x_adv.clamp_(lo, hi)

    def random_start(self, x: Tensor, eps: float, *, restarts: int = 1,
                     generator: torch.Generator | None = None) -> Tensor:
        n = x.shape[0]
        u = torch.rand(n, restarts, *x.shape[1:], generator=generator, device=x.device, dtype=x.dtype)
        return u.mul_(2.0 * eps).sub_(eps)


class L2(Geometry):
    """The L2 ball: steepest ascent is the normalised gradient, projection a rescaling."""

    name, dual = "l2", "l2"

    def norm(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).norm(dim=1)

    def dual_norm(self, grad: Tensor) -> Tensor:
        return grad.flatten(1).norm(dim=1)

    def direction(self, grad: Tensor) -> Tensor:
        return grad / _per_example(self.norm(grad).clamp_min(TINY), grad)

    def step(self, x_adv: Tensor, grad: Tensor, alpha: float | Tensor) -> Tensor:
        # One fused pass: x_adv + (alpha / ||grad||) * grad, the scale per example.
        scale = alpha / self.norm(grad).clamp_min(TINY)
        return torch.addcmul(x_adv, grad, _per_example(scale, x_adv))

    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        # Rescaling onto the ball, then clamping to [0, 1], keeps the norm <= eps: with x in
        # [0, 1] the clamp moves no coordinate of the perturbation away from zero.
        delta = x_adv - x
        e = eps if not isinstance(eps, Tensor) else _per_example(eps, x)
        scale = (e / _per_example(self.norm(delta).clamp_min(TINY), x)).clamp(max=1.0)
        return torch.addcmul(x, delta, scale).clamp_(0.0, 1.0)

    def projector(self, x: Tensor, eps: float | Tensor):
        e = eps if not isinstance(eps, Tensor) else eps.view(-1)

        def project(x_adv: Tensor) -> Tensor:  # in place: delta, rescale, shift back, clamp
            delta = x_adv.sub_(x)
            scale = (e / self.norm(delta).clamp_min(TINY)).clamp_(max=1.0)
            return delta.mul_(_per_example(scale, x)).add_(x).clamp_(0.0, 1.0)
        return project

    def random_start(self, x: Tensor, eps: float, *, restarts: int = 1,
                     generator: torch.Generator | None = None) -> Tensor:
        # The ball is sampled exactly: a Gaussian direction (the inverse normal CDF of
        # uniforms) times a radius eps * u**(1/d).
        n, d = x.shape[0], x[0].numel()
        u = torch.rand(n, restarts, d + 1, generator=generator, device=x.device, dtype=x.dtype)
        # rand may return exactly 0, whose normal quantile is -inf.
        gauss = torch.special.ndtri(u[..., :d].clamp_min(torch.finfo(x.dtype).eps / 2))
        direction = gauss / gauss.norm(dim=-1, keepdim=True)
        radius = eps * u[..., d:] ** (1.0 / d)
        return (direction * radius).view(n, restarts, *x.shape[1:])


_GEOMETRIES = {"linf": Linf(), "l2": L2()}


def geometry(norm: str | Geometry) -> Geometry:
    """The geometry object for ``"linf"`` or ``"l2"`` (a Geometry is returned unchanged)."""
    if isinstance(norm, Geometry):
        return norm
    return _GEOMETRIES[check_choice(norm, "norm", NORMS)]


def default_alpha(eps: float, steps: int) -> float:
    """Madry et al.'s step-size rule, ``2.5 * eps / steps``: enough to cross the ball and back."""
    return 2.5 * eps / max(steps, 1)


def pgd_step(x_adv: Tensor, x: Tensor, grad: Tensor, *, alpha: float, eps: float,
             norm: str = "linf") -> Tensor:
    """One projected gradient ascent step: ``project(x_adv + alpha * direction(grad))``.

    The direction is ``sign(grad)`` for Linf and ``grad / ||grad||_2`` per example for L2 (zero
    where the gradient is zero); the projection is onto the eps-ball around ``x`` intersected
    with [0, 1]. Pass ``-grad`` (or a negative ``alpha``) to descend.

    Args:
        x_adv: current iterate, (N, C, H, W), in [0, 1].
        x: clean images, (N, C, H, W), in [0, 1]; the centre of the ball.
        grad: gradient of the loss at ``x_adv``, same shape.
        alpha: step length in pixel units (in the norm of the ball).
        eps: radius of the ball in pixel units.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The new iterate, same shape: ``||result - x||_norm <= eps``, values in [0, 1]. The
        inputs are not modified.
    """
    geo = geometry(norm)
    return geo.project(geo.step(x_adv, grad, alpha), x, eps)
