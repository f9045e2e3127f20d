"""The robustness–interpretability experiments.

- ROAR and KAR (Hooker et al., 2019; used by Kim, Seo & Jeon, 2019): remove (or keep) the pixels
  an attribution ranks highest, retrain a fresh model on the modified data and measure its test
  accuracy; a better attribution makes ROAR accuracy fall faster and KAR accuracy rise faster
  than a random ranking. ``mask_top``, ``roar_kar``, ``roar_kar_scores``.
- A number for "perceptually aligned" gradients: ``alignment`` (per-example correlation between
  the saliency magnitude and the image).
- Transfer attacks (Ross & Doshi-Velez, 2018): ``transfer_matrix``.
- The 2-D toy (Kim et al., §2.2): ``toy_2d_data``, ``toy_mlp``, ``gradient_alignment_2d``.
- The robustness–accuracy trade-off toy of Tsipras et al. (2019): ``tsipras_data`` and its
  analytic accuracies ``tsipras_accuracies``.
- Large-eps targeted attacks as generation (Tsipras et al., §5): ``targeted_generation``.
- Manifold distance (Kim et al., §2.1) with a VAE: ``VAE``, ``train_vae``, ``project``,
  ``manifold_distance``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import norm as normal_dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import attacks, evaluate, models
from ._checks import check_flag, check_generator, check_images, check_labels, check_number, eval_mode
from .train import TrainConfig, evaluate_accuracy, fit

__all__ = [
    "FRACTIONS",
    "mask_top",
    "random_attribution",
    "RoarKarResult",
    "roar_kar",
    "roar_kar_scores",
    "alignment",
    "mass_near_digit",
    "transfer_matrix",
    "toy_2d_data",
    "toy_mlp",
    "gradient_alignment_2d",
    "plot_toy_2d",
    "tsipras_data",
    "tsipras_accuracies",
    "targeted_generation",
    "GenerationResult",
    "vae_loss",
    "train_vae",
    "project",
    "manifold_distance",
]

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""The fractions of pixels removed (ROAR) or kept (KAR), as in Hooker et al. and Kim et al."""


# --- ROAR and KAR -------------------------------------------------------------------------------

def _check_attr(attr: object, x: Tensor, name: str = "attr") -> Tensor:
    if not isinstance(attr, Tensor) or attr.shape != x.shape:
        shape = tuple(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__
        raise ValueError(f"{name} must be an attribution of x's shape {tuple(x.shape)}, got {shape}")
    return attr


def mask_top(x: Tensor, attr: Tensor, fraction: float, *, keep: bool = False,
             fill: float | Tensor = 0.0) -> Tensor:
    """Replaces the pixels that ``attr`` ranks highest (ROAR), or all the others (KAR).

    Pixels are ranked per example by ``|attr|`` summed over channels; the top
    ``round(fraction * H * W)`` are replaced by ``fill`` in every channel (``keep=False``), or
    kept while all other pixels are replaced (``keep=True``). Ties are broken by position, so
    the result is deterministic.

    Args:
        x: images, (N, C, H, W), in [0, 1].
        attr: attributions, (N, C, H, W).
        fraction: in [0, 1].
        keep: KAR instead of ROAR.
        fill: the replacement value, a number or a (C,) tensor (Hooker et al. use the
            per-channel dataset mean).

    Returns:
        the modified images, (N, C, H, W); ``x`` is not changed.
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    check_number(fraction, "fraction", low=0.0)
    if fraction > 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    check_flag(keep, "keep")
    n, c, h, w = x.shape
    k = round(fraction * h * w)
    scores = attr.detach().abs().sum(dim=1).flatten(1)  # (N, H*W)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, :k], True)  # (N, H*W)
    replace = ~top if keep else top
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    if fill_t.shape[0] not in (1, c):
        raise ValueError(f"fill must be a number or have one value per channel ({c}), "
                         f"got {fill_t.shape[0]} values")
    return torch.where(replace.view(n, 1, h, w), fill_t.expand(c, h, w), x.detach())


def random_attribution(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """A random ranking as an attribution (the baseline of ROAR and KAR), (N, C, H, W)."""
    x = check_images(x)
    check_generator(generator, x)
    score = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=x.device, dtype=x.dtype)
    return score.expand_as(x).clone()


class RoarKarResult(NamedTuple):
    """Test accuracy of models retrained on masked data.

    Attributes:
        fractions: the fractions removed (ROAR) or kept (KAR).
        roar: name -> (repeats, len(fractions)) accuracies after removing the top pixels.
        kar: name -> (repeats, len(fractions)) accuracies after keeping only the top pixels.
        unmasked: (repeats,) accuracy of the same recipe on unmodified data.
        epochs: training epochs of each retrained model.
    """

    fractions: tuple[float, ...]
    roar: dict[str, Tensor]
    kar: dict[str, Tensor]
    unmasked: Tensor
    epochs: int


def roar_kar(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
             attributions: Mapping[str, tuple[Tensor, Tensor]], *, fractions: Sequence[float] = FRACTIONS,
             repeats: int = 1, epochs: int = 3, arch: str | Callable[[], nn.Module] = "small-cnn",
             batch_size: int = 100,
             include_random: bool = True, kar: bool = True, fill: float | str = "mean", seed: int = 0,
             progress: bool = True) -> RoarKarResult:
    """ROAR and KAR (Hooker et al., 2019): retrain on masked data, measure masked test accuracy.

    For every attribution method and fraction, the training and the test images are masked
    with :func:`mask_top` (the replacement is ``fill``: by default the per-channel training mean,
    as in Hooker et al.; on MNIST that grey leaves a visible silhouette where ink was removed, so
    ``fill=0.0``, the background, is the stricter choice), a fresh ``arch``
    model is trained for ``epochs`` epochs of standard training (Adam, lr 1e-3), and its accuracy
    on the masked test set is recorded; ``repeats`` retrainings with different seeds give the
    spread. A random ranking (``"random"``) is added as the baseline.

    Args:
        train: (x, y) training images and labels.
        test: (x, y) test images and labels.
        attributions: name -> (attribution of train x, attribution of test x).
        fractions: fractions of pixels removed / kept.
        repeats: retrainings per point, with seeds ``seed + r``.
        epochs: epochs per retraining.
        arch: architecture of the retrained models: a name for ``robustlab.models.create`` or a
            function returning a fresh model (called after seeding).
        batch_size: training batch size.
        include_random: add the random baseline.
        kar: also run KAR (doubles the cost).
        fill: ``"mean"`` (per-channel training mean) or a number.
        seed: base seed (random ranking and retraining).
        progress: show a progress bar over retrainings.

    Returns:
        :class:`RoarKarResult`.
    """
    (x_tr, y_tr), (x_te, y_te) = train, test
    check_images(x_tr, "train x")
    check_labels(y_tr, x_tr, "train y")
    check_images(x_te, "test x")
    check_labels(y_te, x_te, "test y")
    check_number(repeats, "repeats", low=1, integer=True)
    check_number(epochs, "epochs", low=1, integer=True)
    for f in fractions:
        check_number(f, "fraction", low=0.0)
        if f > 1:  # before any retraining, not when mask_top meets it
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
    attributions = dict(attributions)
    for name, (a_tr, a_te) in attributions.items():
        _check_attr(a_tr, x_tr, f"attributions[{name!r}][0]")
        _check_attr(a_te, x_te, f"attributions[{name!r}][1]")
    if include_random:
        g = torch.Generator(device=x_tr.device).manual_seed(seed)
        attributions["random"] = (random_attribution(x_tr, generator=g), random_attribution(x_te, generator=g))
    if fill == "mean":
        fill = x_tr.mean(dim=(0, 2, 3))  # (C,)
    elif isinstance(fill, str):
        raise ValueError(f"fill must be 'mean' or a number, got {fill!r}")
    modes = [False, True] if kar else [False]
    total = repeats * (1 + len(attributions) * len(fractions) * len(modes))
    bar = tqdm(total=total, desc="ROAR/KAR retraining", disable=not progress)

    def retrain(xa: Tensor, xb: Tensor, r: int) -> float:
        torch.manual_seed(seed + r)
        model = (models.create(arch) if isinstance(arch, str) else arch()).to(x_tr.device)
        config = TrainConfig(method="standard", epochs=epochs, batch_size=batch_size, seed=seed + r)
        fit(model, (xa, y_tr), config, progress=False)
        bar.update(1)
        return evaluate_accuracy(model, xb, y_te)

    unmasked = torch.tensor([retrain(x_tr, x_te, r) for r in range(repeats)])
    out = {False: {}, True: {}}
    for name, (a_tr, a_te) in attributions.items():
        for keep in modes:
            acc = torch.zeros(repeats, len(fractions))
            for j, f in enumerate(fractions):
                xa = mask_top(x_tr, a_tr, f, keep=keep, fill=fill)
                xb = mask_top(x_te, a_te, f, keep=keep, fill=fill)
                for r in range(repeats):
                    acc[r, j] = retrain(xa, xb, r)
            out[keep][name] = acc
    bar.close()
    return RoarKarResult(tuple(fractions), out[False], out[True], unmasked, epochs)


def roar_kar_scores(result: RoarKarResult, baseline: str = "random") -> dict[str, dict[str, float]]:
    """Kim et al.'s scores: the area between a method's curve and the random curve.

    ROAR score = integral over the fractions of (random accuracy - method accuracy): positive
    when removing the method's top pixels hurts more than removing random ones. KAR score =
    integral of (method accuracy - random accuracy): positive when keeping them helps more. Mean
    curves over repeats, trapezoid rule over ``result.fractions``.

    Returns:
        name -> {"roar": score, "kar": score (absent without KAR)} for every method but the baseline.
    """
    if baseline not in result.roar:
        raise ValueError(f"baseline {baseline!r} is not in the result; run roar_kar with include_random=True")
    f = torch.tensor(result.fractions, dtype=torch.float64)
    area = lambda curve: float(torch.trapezoid(curve.double(), f))
    scores = {}
    for name in result.roar:
        if name == baseline:
            continue
        s = {"roar": area(result.roar[baseline].mean(0) - result.roar[name].mean(0))}
        if name in result.kar:
            s["kar"] = area(result.kar[name].mean(0) - result.kar[baseline].mean(0))
        scores[name] = s
    return scores


# --- perceptual alignment -----------------------------------------------------------------------

def alignment(attr: Tensor, x: Tensor) -> Tensor:
    """How much a saliency map looks like the image: per-example Pearson correlation between
    ``|attr|`` (summed over channels) and the image intensity (mean over channels).

    On MNIST the digit is the bright strokes, so a map concentrated on the strokes scores near
    1 and a noise-like map near 0.

    Args:
        attr: attributions, (N, C, H, W).
        x: the images, (N, C, H, W), in [0, 1].

    Returns:
        (N,) correlations in [-1, 1] (0 for a constant map or image).
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    a = attr.detach().abs().sum(dim=1).flatten(1).double()
    b = x.detach().mean(dim=1).flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(dim=1) / den.clamp_min(1e-300), torch.zeros_like(den))


def mass_near_digit(attr: Tensor, x: Tensor, *, threshold: float = 0.5, radius: int = 2) -> Tensor:
    """The share of a saliency map's mass on or next to the digit, per example.

    The digit is the pixels brighter than ``threshold`` (any channel), grown by ``radius``
    pixels (a square dilation); the result is ``sum |attr| there / sum |attr|``. Unlike
    :func:`alignment` it does not penalise maps that light up the background right beside the
    strokes (where adding ink would change the class), which is what robust models do.

    Args:
        attr: attributions, (N, C, H, W).
        x: the images, (N, C, H, W), in [0, 1].
        threshold: brightness that counts as ink.
        radius: dilation in pixels, >= 0.

    Returns:
        (N,) shares in [0, 1] (0 for an all-zero map).
    """
    x = check_images(x)
    attr = _check_attr(attr, x)
    check_number(radius, "radius", low=0, integer=True)
    ink = (x.detach().amax(dim=1, keepdim=True) > threshold).to(x.dtype)
    near = F.max_pool2d(ink, 2 * radius + 1, stride=1, padding=radius) > 0 if radius else ink > 0  # (N, 1, H, W)
    mass = attr.detach().abs().sum(dim=1, keepdim=True).double()
    total = mass.flatten(1).sum(dim=1)
    inside = (mass * near).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total))


# --- transfer attacks ---------------------------------------------------------------------------

transfer_matrix = evaluate.transfer_matrix  # moved to robustlab.evaluate; importable here too


# --- the 2-D toy (Kim et al., section 2.2) ------------------------------------------------------

def toy_2d_data(n: int, *, offset: float = 0.2, spread: float = 0.07,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Two classes of 2-D points, each a mixture of two Gaussians, in an XOR layout in [0, 1]^2.

    Class 0 clusters sit at (0.5 - offset, 0.5 - offset) and (0.5 + offset, 0.5 + offset),
    class 1 at the other two corners; every cluster has standard deviation ``spread``. The
    points are clamped to [0, 1] and shaped (N, 1, 1, 2), so every attack and training method
    of robustlab applies to them unchanged.

    Args:
        n: number of points (classes and clusters alternate, so they are balanced).
        offset: distance of each cluster centre from (0.5, 0.5) along both axes.
        spread: standard deviation of every cluster.
        generator: random source.

    Returns:
        (x, y): (n, 1, 1, 2) points in [0, 1] and (n,) int64 labels.
    """
    check_number(n, "n", low=2, integer=True)
    check_number(offset, "offset", low=0.0)
    check_number(spread, "spread", low=0.0, strict=True)
    y = torch.arange(n) % 2
    cluster = (torch.arange(n) // 2) % 2
    lo, hi = 0.5 - offset, 0.5 + offset
    centres = torch.tensor([[[lo, lo], [hi, hi]], [[lo, hi], [hi, lo]]])  # (class, cluster, 2)
    x = centres[y, cluster] + spread * torch.randn(n, 2, generator=generator)
    return x.clamp(0.0, 1.0).view(n, 1, 1, 2), y


def toy_mlp(hidden: int = 64, *, seed: int = 0) -> nn.Module:
    """A small MLP for the 2-D toy: (N, 1, 1, 2) -> (N, 2) logits, deterministic for a seed."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return nn.Sequential(nn.Flatten(), nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, 2))
    finally:
        torch.random.set_rng_state(state)


def gradient_alignment_2d(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Cosine between the loss gradient at each point and the direction to the nearest point of
    the other class: near 1 when the gradient points along the data towards the other class
    (Kim et al.'s picture of a robust model), near 0 when it is unrelated to the data.

    Args:
        model: a 2-D toy model.
        x: (N, 1, 1, 2) points; y: (N,) labels (both classes present).

    Returns:
        (N,) cosines.
    """
    x = check_images(x)
    y = check_labels(y, x)
    with eval_mode(model):
        x_in = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    p = x.detach().view(-1, 2)
    d = torch.cdist(p, p)  # (N, N)
    d[y[:, None] == y[None, :]] = float("inf")
    nearest = p[d.argmin(dim=1)] - p  # (N, 2)
    return F.cosine_similarity(grad.view(-1, 2), nearest, dim=1)


def plot_toy_2d(model: nn.Module, x: Tensor, y: Tensor, *, ax=None, grid: int = 200, arrows: int = 60,
                title: str | None = None):
    """Decision regions, data and normalised loss gradients of a 2-D toy model.

    Args:
        model: a 2-D toy model, (N, 1, 1, 2) -> (N, 2) logits.
        x: (N, 1, 1, 2) points; y: (N,) labels.
        ax: matplotlib Axes (default: a new figure).
        grid: resolution of the decision-region image.
        arrows: number of points that get a gradient arrow.
        title: axes title.

    Returns:
        the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    x = check_images(x)
    y = check_labels(y, x)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    axis = torch.linspace(0, 1, grid)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], dim=1).view(-1, 1, 1, 2)
    with torch.no_grad(), eval_mode(model):
        p1 = F.softmax(model(points), dim=1)[:, 1].view(grid, grid)
    ax.imshow(p1.numpy(), origin="lower", extent=(0, 1, 0, 1), cmap="coolwarm", vmin=0, vmax=1, alpha=0.35)
    ax.contour(gx.numpy(), gy.numpy(), p1.numpy(), levels=[0.5], colors="k", linewidths=1)
    p = x.view(-1, 2)
    ax.scatter(p[:, 0], p[:, 1], c=y.numpy(), cmap="coolwarm", s=6, edgecolors="none")
    idx = torch.linspace(0, x.shape[0] - 1, min(arrows, x.shape[0])).long()
    with eval_mode(model):
        xi = x[idx].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[idx], reduction="sum"), xi)
    g = F.normalize(g.view(-1, 2), dim=1)
    ax.quiver(p[idx, 0], p[idx, 1], g[:, 0], g[:, 1], angles="xy", scale=25, width=0.004, color="k")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


# --- Tsipras et al.'s trade-off toy -------------------------------------------------------------

def tsipras_data(n: int, *, d: int, p: float = 0.95, eta: float | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Tsipras et al.'s distribution: one robust feature and ``d`` weakly correlated ones.

    ``y`` is +1 or -1 with equal probability; ``x_1 = y`` with probability ``p`` (else ``-y``);
    ``x_2 .. x_{d+1} ~ N(eta * y, 1)``, with ``eta = 2 / sqrt(d)`` by default. (Feature vectors,
    not images: this toy is analysed in closed form by :func:`tsipras_accuracies`.)

    Returns:
        (x, y): (n, d + 1) features and (n,) labels in {-1, +1} (float).
    """
    check_number(n, "n", low=1, integer=True)
    check_number(d, "d", low=1, integer=True)
    check_number(p, "p", low=0.5)
    if p > 1:
        raise ValueError(f"p must lie in [0.5, 1], got {p}")
    eta = 2.0 / math.sqrt(d) if eta is None else eta
    y = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    flip = torch.rand(n, generator=generator, dtype=torch.float64) >= p
    x1 = torch.where(flip, -y, y)
    rest = eta * y[:, None] + torch.randn(n, d, generator=generator, dtype=torch.float64)
    return torch.cat([x1[:, None], rest], dim=1), y


def tsipras_accuracies(*, d: int, p: float = 0.95, eta: float | None = None,
                       eps: float | None = None) -> dict[str, float]:
    """Closed-form clean and Linf-robust accuracies of two classifiers on :func:`tsipras_data`.

    - "standard": ``sign(mean(x_2 .. x_{d+1}))``: clean accuracy ``Phi(eta sqrt(d))``; an Linf
      adversary with ``eps`` shifts every weak feature by ``-eps * y``, leaving
      ``Phi((eta - eps) sqrt(d))``.
    - "robust": ``sign(x_1)``: accuracy ``p``, unchanged for ``eps < 1``.

    With ``eps = 2 eta`` (the paper's choice) the standard classifier drops to
    ``Phi(-eta sqrt(d))``, below 1 - p once ``eta sqrt(d)`` is large: the trade-off.

    Returns:
        {"standard_clean", "standard_robust", "robust_clean", "robust_robust", "eps"}.
    """
    check_number(d, "d", low=1, integer=True)
    eta = 2.0 / math.sqrt(d) if eta is None else eta
    eps = 2.0 * eta if eps is None else eps
    root = math.sqrt(d)
    return {
        "standard_clean": float(normal_dist.cdf(eta * root)),
        "standard_robust": float(normal_dist.cdf((eta - eps) * root)),
        "robust_clean": float(p),
        "robust_robust": float(p) if eps < 1 else 0.0,
        "eps": float(eps),
    }


# --- large-eps targeted attacks as generation (Tsipras et al., section 5) -----------------------

class GenerationResult(NamedTuple):
    """Images pushed towards target classes, and how a held-out judge sees them.

    Attributes:
        x_gen: (N, C, H, W) generated images.
        target: (N,) target classes.
        source_success: fraction the attacked model classifies as the target.
        judge_agreement: fraction the held-out judge model classifies as the target.
    """

    x_gen: Tensor
    target: Tensor
    source_success: float
    judge_agreement: float


def targeted_generation(model: nn.Module, judge: nn.Module, x: Tensor, target: Tensor, *, eps: float,
                        steps: int = 100, norm: str = "l2", alpha: float | None = None,
                        generator: torch.Generator | None = None) -> GenerationResult:
    """A large-eps targeted PGD towards ``target``, judged by a model that was not attacked.

    Tsipras et al. (§5) observe that for a robust model such attacks produce images that look
    like the target class; for a standard model they stay noise on the original digit. The
    held-out ``judge``'s agreement with the target measures it.

    Args:
        model: the attacked model.
        judge: an independently trained classifier (not ``model``).
        x: starting images, (N, C, H, W), in [0, 1].
        target: (N,) int64 target classes.
        eps: radius (large: e.g. L2 4-8 on MNIST).
        steps: PGD steps.
        norm: "l2" or "linf".
        alpha: step size (default 2.5 * eps / steps).
        generator: random start.
    """
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_gen = attacks.pgd(model, x, target, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=True,
                        random_start=False, generator=generator)
    with torch.no_grad(), eval_mode(model), eval_mode(judge):
        success = float((model(x_gen).argmax(1) == target).float().mean())
        judged = float((judge(x_gen).argmax(1) == target).float().mean())
    return GenerationResult(x_gen, target, success, judged)


# --- manifold distance (Kim et al., section 2.1) ------------------------------------------------

def vae_loss(vae: models.VAE, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """The negative ELBO per example, averaged: Bernoulli reconstruction + KL to N(0, I)."""
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + eps * (0.5 * logvar).exp()
    rec = F.binary_cross_entropy_with_logits(vae.decode_logits(z), x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
    return (rec + kl).mean()


def train_vae(x: Tensor, *, latent: int = 16, hidden: int = 512, epochs: int = 20, batch_size: int = 128,
              lr: float = 1e-3, seed: int = 0, progress: bool = True) -> tuple[models.VAE, list[dict]]:
    """Trains a :class:`~robustlab.models.VAE` on images ``x`` with Adam; reproducible for a seed.

    Returns:
        (the VAE in eval mode, per-epoch history of the mean negative ELBO).
    """
    x = check_images(x)
    check_number(epochs, "epochs", low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    torch.manual_seed(seed)
    vae = models.VAE(latent=latent, hidden=hidden, size=x.shape[-1]).to(x.device)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    g = torch.Generator(device=x.device).manual_seed(seed)
    history = []
    for epoch in tqdm(range(epochs), desc="VAE", disable=not progress):
        vae.train()
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        total = torch.zeros((), device=x.device)
        for b in range(0, x.shape[0], batch_size):
            xb = x[order[b:b + batch_size]]
            loss = vae_loss(vae, xb, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * xb.shape[0]
        history.append({"epoch": epoch + 1, "neg_elbo": float(total) / x.shape[0]})
    return vae.eval(), history


def project(vae: models.VAE, x: Tensor, *, refine_steps: int = 0, lr: float = 0.05) -> Tensor:
    """The closest point to ``x`` on the VAE's learned manifold.

    Starts from ``decode(mu(x))``; with ``refine_steps > 0`` the latent code is then optimised
    (Adam, ``lr``) to minimise ``||decode(z) - x||^2`` per example, which finds a nearer point
    when the encoder is fooled (adversarial images are off the training distribution).

    Returns:
        (N, 1, H, W) projections in [0, 1].
    """
    x = check_images(x)
    check_number(refine_steps, "refine_steps", low=0, integer=True)
    with eval_mode(vae):
        with torch.no_grad():
            z0 = vae.encode(x)[0]
        if refine_steps == 0:
            with torch.no_grad():
                return vae.decode(z0)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(refine_steps):
            # Summed over examples: each code only affects its own term, so this is per example.
            loss = (vae.decode(z) - x).square().flatten(1).sum(1).sum()
            (grad,) = torch.autograd.grad(loss, z)
            z.grad = grad
            opt.step()
        with torch.no_grad():
            return vae.decode(z.detach())


def manifold_distance(vae: models.VAE, x: Tensor, *, refine_steps: int = 0, lr: float = 0.05) -> Tensor:
    """``||x - project(x)||_2`` per example, (N,): how far images lie from the learned manifold."""
    return (x.detach() - project(vae, x, refine_steps=refine_steps, lr=lr)).flatten(1).norm(dim=1)
