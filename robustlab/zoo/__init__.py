"""The model zoo: trained MNIST models as safetensors, each with a JSON model card.

``load(name)`` returns the model in eval mode after checking the sha256 of its weights against
its card; ``names()`` lists what is shipped; ``build(name)`` retrains an entry from scratch with
the recipe in ``RECIPES`` (on MNIST train minus the embedded 5,000, which stay held out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data, models, train

__all__ = ["load", "names", "classifiers", "card", "build", "update_metrics", "RECIPES", "NOTES", "ZOO_DIR",
           "ZooError"]

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parent

_BASE = dict(batch_size=100, optimizer="adam", lr=1e-3, schedule="cosine", seed=0)

# name -> (architecture, TrainConfig fields). The classifiers under study are Wong et al.'s small
# CNN (0.67 MB each).
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist-standard": ("small-cnn", dict(_BASE, method="standard", epochs=15, shift=2)),
    "mnist-pgd-linf-0.1": ("small-cnn", dict(_BASE, method="pgd", eps=0.1, steps=10, epochs=10, eps_ramp_epochs=2)),
    "mnist-pgd-linf-0.2": ("small-cnn", dict(_BASE, method="pgd", eps=0.2, steps=10, epochs=10, eps_ramp_epochs=2)),
    "mnist-pgd-linf-0.3": ("small-cnn", dict(_BASE, method="pgd", eps=0.3, steps=10, epochs=20, eps_ramp_epochs=5)),
    "mnist-pgd-l2-2.0": ("small-cnn", dict(_BASE, method="pgd", norm="l2", eps=2.0, steps=10, epochs=10,
                                           eps_ramp_epochs=2)),
    "mnist-trades-linf-0.3": ("small-cnn", dict(_BASE, method="trades", eps=0.3, steps=10, beta=6.0, epochs=15,
                                                eps_ramp_epochs=5)),
    "mnist-fgsm-linf-0.3": ("small-cnn", dict(_BASE, method="fgsm", eps=0.3, epochs=10)),
    # Wong et al.'s MNIST recipe (their train_mnist.py): eps 0.3 from the first batch, alpha 1.25 eps,
    # Adam with a cyclic learning rate peaking at 5e-3, 10 epochs. (With the zoo's usual cosine 1e-3
    # and a 5-epoch eps ramp the guard stopped training at epoch 3, at eps 0.18.)
    "mnist-fgsm-rs-linf-0.3": ("small-cnn", dict(_BASE, method="fgsm_rs", eps=0.3, epochs=10, lr=5e-3,
                                                 schedule="cyclic")),
    # Certified training (Gowal et al.'s interval bound propagation), each trained at a larger eps than
    # it is named and verified for, as in their paper (0.2 for 0.1, 0.4 for 0.3): clean warm-up, then
    # eps and the clean-loss weight kappa ramped together (kappa 1 -> 0.5). The 0.3 model is the wider
    # CNN (see its note).
    "mnist-ibp-linf-0.1": ("small-cnn", dict(_BASE, method="ibp", eps=0.2, epochs=20, warmup_epochs=1,
                                             eps_ramp_epochs=8, kappa_end=0.5)),
    "mnist-ibp-linf-0.3": ("wide-cnn", dict(_BASE, method="ibp", eps=0.35, epochs=50, warmup_epochs=2,
                                            eps_ramp_epochs=20, kappa_end=0.5)),
    "mnist-gradreg": ("small-cnn", dict(_BASE, method="gradreg", lam=10.0, epochs=10)),
    "mnist-gaussian-0.25": ("small-cnn", dict(_BASE, method="gaussian", sigma=0.25, epochs=10)),
    "mnist-gaussian-0.5": ("small-cnn", dict(_BASE, method="gaussian", sigma=0.5, epochs=10)),
    "mnist-gaussian-1.0": ("small-cnn", dict(_BASE, method="gaussian", sigma=1.0, epochs=10)),
    # An independently trained classifier of another architecture: the "judge" of targeted
    # generation (Tsipras et al., section 5), never attacked itself. (An MLP: 2.7 MB, where Madry
    # et al.'s CNN would take 13 MB.)
    "mnist-standard-mlp": ("mlp", dict(_BASE, method="standard", epochs=10, shift=2, seed=1)),
    # The learned manifold for Kim et al.'s manifold distance (a VAE, not a classifier).
    "mnist-vae": ("vae", dict(method="vae", latent=16, hidden=512, epochs=20, batch_size=128, lr=1e-3, seed=0)),
    # The same VAE trained as a VAE-GAN (Larsen et al. 2016), the manifold model Kim et al. project
    # onto; only its encoder and decoder are kept (the discriminator is a training device).
    "mnist-vaegan": ("vae", dict(method="vaegan", latent=16, hidden=512, epochs=20, batch_size=128, lr=1e-3,
                                 disc_lr=2e-4, gamma=1.0, adv_weight=1.0, seed=0)),
    # Madry et al.'s MNIST architecture (2 conv + 1,024-unit dense layer, about 3.3 M parameters):
    # PGD-7 training (their PGD-40 would take several times longer on a CPU), eps ramped over 3 epochs.
    "mnist-madry-pgd-linf-0.3": ("madry-cnn", dict(_BASE, method="pgd", eps=0.3, steps=7, epochs=12,
                                                   eps_ramp_epochs=3)),
    # The same architecture trained in L2 (eps 2.0, as mnist-pgd-l2-2.0): does capacity give L2
    # training's image-aligned gradients too, or more of them?
    "mnist-madry-pgd-l2-2.0": ("madry-cnn", dict(_BASE, method="pgd", norm="l2", eps=2.0, steps=7, epochs=8,
                                                 eps_ramp_epochs=2)),
}

# Models that are in the zoo as lessons, not as tools, or whose recipe has a story: the note goes into
# the card and `robustlab zoo list` points at it.
NOTES: dict[str, str] = {
    "mnist-madry-pgd-l2-2.0": (
        "Madry et al.'s MNIST architecture trained with PGD-7 in L2 at eps 2.0 (eps ramped over 2 epochs), 8 epochs, "
        "Adam + cosine. Trained on ONE thread of the 2-core CPU over two sessions (resumed from its epoch-5 "
        "checkpoint), beside other jobs: the 142 min of the card are the sum of the epochs (10-41 min each; about "
        "10 when little else ran)."),
    "mnist-madry-pgd-linf-0.3": (
        "Madry et al.'s MNIST architecture (two convolutions, a 1,024-unit dense layer), trained with "
        "PGD-7 at Linf 0.3 (eps ramped over 3 epochs) for 12 epochs, where Madry et al. used PGD-40 for "
        "about 100,000 iterations. Trained on ONE thread of the 2-core CPU, in two sessions (resumed from "
        "its epoch-4 checkpoint), partly beside other jobs: the 143 min of the card are the sum of the epochs "
        "(8.9-17.7 min each, about 9-11 when nothing else ran). Its evaluation under the attack suite is in the card's "
        "'suite' metrics and results/evaluate/."),
    "mnist-fgsm-linf-0.3": (
        "A deliberate example of catastrophic overfitting (Wong, Rice & Kolter 2020): plain FGSM "
        "training at eps 0.3, no random start, no eps ramp. The history's guard_accuracy (PGD-10 "
        "accuracy on 1,000 training digits after each epoch) shows the collapse; its accuracy under "
        "FGSM is gradient masking, and multi-step attacks break it. Not a robust model."),
    "mnist-fgsm-rs-linf-0.3": (
        "Wong, Rice & Kolter's MNIST recipe: eps 0.3 from the first batch, alpha 1.25 eps, Adam with a "
        "cyclic learning rate peaking at 5e-3, 10 epochs. Its history is a lesson of its own: the "
        "guard_accuracy (PGD-10 on 1,000 training digits) stayed near 0 for epochs 2-5 while the FGSM "
        "training accuracy was above 0.9 - catastrophic overfitting from the start, which a guard that "
        "looks for a drop cannot see - and recovered from epoch 7 as the learning rate fell. One seed; "
        "FGSM training is known to depend on it. Its robustness is the attack suite's record, not the guard's."),
    "mnist-vaegan": (
        "The VAE of mnist-vae (same size, latent 16) trained with Larsen et al.'s VAE-GAN objective: pixel "
        "reconstruction + KL + the squared distance in the discriminator's features (gamma 1) + the generator's "
        "adversarial loss (weight 1); only the encoder and decoder are kept. The weights 1 and 1 are the untuned "
        "defaults: in a 10-epoch trial on 4,000 of the embedded digits (the validation set) the plain VAE "
        "projected 500 held-out ones nearer (L2 5.1) than the VAE-GAN with gamma/adversarial weights 1/1 (7.0), "
        "0.1/1 (5.8) or 1/0.1 (6.8). Trained fully (20 epochs on 55,000 digits), the shipped VAE-GAN projects the "
        "embedded digits slightly nearer than mnist-vae (2.85 against 2.99, the cards' metrics): the short trial "
        "did not predict the full run. No weight was chosen to move the manifold claim."),
    "mnist-ibp-linf-0.3": (
        "Interval bound propagation (Gowal et al. 2018) on the wider CNN (models.WideCNN, 1.6 M parameters), "
        "trained at eps 0.35 to be verified at 0.3. The training eps was chosen on a validation set, the "
        "embedded 5,000 digits that training leaves out (never on MNIST test): clean / IBP-verified accuracy "
        "at Linf 0.3 there was 96.4 / 85.1 % trained at 0.4 (Gowal et al.'s choice), 97.0 / 85.9 % at 0.35 "
        "and 97.4 / 83.7 % at 0.3; only 0.35 met both targets (97 % clean, 85 % verified). Training 60 epochs "
        "instead of 50 at 0.35 gave 96.96 / 86.1 % on validation, no better on the clean target, so the 50-epoch "
        "model stays. On MNIST test this model is 96.9 % clean, 0.1 point short of the clean target (within the "
        "95 % interval), and 85.9 % verified. The zoo's small CNN trained at 0.4 (40 epochs, ramp 15) "
        "reached 93.4 % clean and 79.4 % IBP-verified on the first 2,000 test digits: interval bounds need capacity."),
}

GENERATIVE = ("vae", "vaegan")
"""Methods whose zoo entries are generative models, not classifiers."""


class ZooError(RuntimeError):
    """A zoo entry is missing, unknown or corrupted."""


def _paths(name: str, root: Path | None = None) -> tuple[Path, Path]:
    root = ZOO_DIR if root is None else Path(root)
    return root / f"{name}.safetensors", root / f"{name}.json"


def names(root: str | Path | None = None) -> list[str]:
    """The names of the shipped models (those with both weights and a card), sorted."""
    root = ZOO_DIR if root is None else Path(root)
    return sorted(p.stem for p in root.glob("*.json") if p.with_suffix(".safetensors").exists())


def classifiers(root: str | Path | None = None) -> list[str]:
    """The shipped classifiers (every entry but the generative ones such as ``mnist-vae``)."""
    return [n for n in names(root) if card(n, root)["method"] not in GENERATIVE]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The model card of ``name`` as a dict (architecture, recipe, data, metrics, sha256)."""
    weights, card_path = _paths(name, root)
    if not card_path.exists():
        known = names(root) or sorted(RECIPES)
        raise ZooError(f"no zoo model named {name!r} (no card at {card_path}); known models: "
                       f"{', '.join(known)}")
    return json.loads(card_path.read_text())


def update_metrics(name: str, metrics: dict[str, Any], root: str | Path | None = None) -> dict[str, Any]:
    """Merges measured ``metrics`` into the card of ``name`` and writes it back."""
    info = card(name, root)
    info.setdefault("metrics", {}).update(metrics)
    _paths(name, root)[1].write_text(json.dumps(info, indent=2) + "\n")
    return info


def load(name: str, *, root: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A zoo model in eval mode, after verifying the sha256 of its weights.

    Args:
        name: one of :func:`names`, e.g. ``"mnist-pgd-linf-0.3"``.
        root: folder holding ``<name>.safetensors`` and ``<name>.json`` (default: the package's).
        device: where to put the model.

    Returns:
        The ``nn.Module``, mapping (N, 1, 28, 28) images in [0, 1] to (N, 10) logits.
    """
    from safetensors.torch import load_file

    info = card(name, root)
    weights, _ = _paths(name, root)
    if not weights.exists():
        raise ZooError(f"the weights of {name!r} are missing: expected {weights}; rebuild them "
                       f"with `robustlab zoo build {name}`")
    digest = _sha256(weights)
    if digest != info["sha256"]:
        raise ZooError(f"the weights of {name!r} at {weights} are corrupted: sha256 {digest[:12]}... "
                       f"differs from the card's {info['sha256'][:12]}...; reinstall robustlab or "
                       f"rebuild with `robustlab zoo build {name}`")
    model = models.create(info["architecture"], **info.get("architecture_kwargs", {}))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()


def build(name: str, *, out: str | Path | None = None, data_root: str | Path | None = None,
          checkpoint_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Trains zoo entry ``name`` from scratch with its recipe and writes weights and card.

    Training data: MNIST train minus the embedded 5,000 digits (``exclude_embedded=True``),
    from ``data_root`` or ``$ROBUSTLAB_DATA``. A checkpoint per epoch lets a killed build resume.

    Args:
        name: a key of ``RECIPES``.
        out: folder for ``<name>.safetensors`` and ``<name>.json`` (default: the package's).
        data_root: MNIST root in torchvision's layout.
        checkpoint_dir: where the per-epoch checkpoint goes (default: ``out``/checkpoints).
        progress: show tqdm bars.

    Returns:
        The model card written.
    """
    if name not in RECIPES:
        raise ZooError(f"no recipe for {name!r}; known recipes: {', '.join(RECIPES)}")
    arch, fields = RECIPES[name]
    if fields["method"] in GENERATIVE:
        return _build_vae(name, fields, out=out, data_root=data_root, progress=progress)
    config = train.TrainConfig(**fields)
    config.validate()
    out = ZOO_DIR if out is None else Path(out)
    ckpt_dir = out / "checkpoints" if checkpoint_dir is None else Path(checkpoint_dir)
    x, y = data.load("mnist", "train", root=data_root, download=False, exclude_embedded=True)
    torch.manual_seed(config.seed)
    model = models.create(arch)
    result = train.fit(model, (x, y), config, checkpoint=ckpt_dir / f"{name}.pt", progress=progress)
    return _save(name, out, model, arch=arch, arch_kwargs={}, method=config.method, config=config.to_dict(),
                 examples=int(x.shape[0]), seed=config.seed,
                 seconds=sum(h["seconds"] for h in result.history), history=result.history,
                 stopped=result.stopped,
                 metrics=lambda: {"embedded_clean_accuracy": train.evaluate_accuracy(model, *data.embedded_mnist())})


def _build_vae(name: str, fields: dict[str, Any], *, out, data_root, progress: bool) -> dict[str, Any]:
    """``build`` for a VAE recipe: trains with ``models.train_vae`` (or ``models.train_vaegan`` for
    ``method="vaegan"``) and writes weights + card."""
    from .. import interpret

    out = ZOO_DIR if out is None else Path(out)
    x, _ = data.load("mnist", "train", root=data_root, download=False, exclude_embedded=True)
    kwargs = {k: fields[k] for k in ("latent", "hidden")}
    train_kwargs = {k: v for k, v in fields.items() if k not in ("method", "latent", "hidden")}
    trainer = models.train_vaegan if fields["method"] == "vaegan" else models.train_vae
    start = time.perf_counter()
    vae, history = trainer(x, progress=progress, **kwargs, **train_kwargs)
    seconds = time.perf_counter() - start

    def metrics() -> dict[str, float]:
        emb = data.embedded_mnist()
        with torch.no_grad():
            neg_elbo = float(interpret.vae_loss(vae, emb.x, generator=torch.Generator().manual_seed(0)))
        return {"embedded_neg_elbo": neg_elbo,
                "embedded_manifold_distance": float(interpret.manifold_distance(vae, emb.x).mean())}

    return _save(name, out, vae, arch="vae", arch_kwargs=kwargs, method=fields["method"], config=dict(fields),
                 examples=int(x.shape[0]), seed=fields["seed"], seconds=seconds, history=history, stopped=None,
                 metrics=metrics)


def _save(name: str, out: Path, model: nn.Module, *, arch: str, arch_kwargs: dict[str, Any], method: str,
          config: dict[str, Any], examples: int, seed: int, seconds: float, history: list[dict], stopped,
          metrics) -> dict[str, Any]:
    """Writes a trained zoo entry: safetensors weights, then the card (with their sha256).

    ``metrics`` is called after the weights are written, so the card measures what was saved.
    """
    from safetensors.torch import save_file

    weights, card_path = _paths(name, out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    info = {"name": name, "architecture": arch}
    if name in NOTES:
        info["note"] = NOTES[name]
    if arch_kwargs:
        info["architecture_kwargs"] = arch_kwargs
    info.update({
        "parameters": sum(p.numel() for p in model.parameters()),
        "method": method,
        "config": config,
        "data": {"dataset": "mnist", "split": "train", "exclude_embedded": True, "examples": examples},
        "seed": seed,
        "training": {
            "seconds": round(seconds, 1),
            "epochs_run": len(history),
            "stopped": stopped,
            "history": history,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                       f"{'cuda' if next(model.parameters()).is_cuda else 'cpu'}",
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        },
        "metrics": metrics(),
        "sha256": _sha256(weights),
    })
    card_path.write_text(json.dumps(info, indent=2) + "\n")
    return info
