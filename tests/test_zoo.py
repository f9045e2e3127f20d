"""The model zoo: offline loading, checksums, cards, size, and the build pipeline on tiny data."""

import json
import shutil

import numpy as np
import pytest
import torch

from robustlab import data, zoo
from robustlab.train import evaluate_accuracy

from .test_data import write_mnist_like

SHIPPED = zoo.names()
CLASSIFIERS = zoo.classifiers()


def test_every_recipe_is_shipped_and_the_zoo_fits_the_size_budget():
    assert set(SHIPPED) == set(zoo.RECIPES)
    total = sum((zoo.ZOO_DIR / f"{n}.safetensors").stat().st_size for n in SHIPPED)
    # 56 MiB: thirteen small CNNs (0.67 MB each), the wider IBP CNN (6.6 MB), the MLP judge (2.7 MB),
    # the two manifold models, the VAE and the VAE-GAN's encoder and decoder (5.4 MB each), and the
    # two models of Madry et al.'s architecture, Linf and L2 (13.1 MB each, float32 like the rest).
    assert total < 56 * 2 ** 20


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_zoo_model_loads_offline_and_reproduces_its_card(name, embedded):
    model = zoo.load(name)
    card = zoo.card(name)
    assert not model.training
    assert card["name"] == name and card["data"]["exclude_embedded"] is True
    assert card["config"]["method"] == card["method"] == zoo.RECIPES[name][1]["method"]
    measured = evaluate_accuracy(model, embedded.x, embedded.y)
    assert abs(measured - card["metrics"]["embedded_clean_accuracy"]) <= 0.005


def test_the_vae_loads_and_reproduces_its_card(embedded):
    from robustlab import interpret

    assert "mnist-vae" in SHIPPED and "mnist-vae" not in CLASSIFIERS
    vae = zoo.load("mnist-vae")
    card = zoo.card("mnist-vae")
    assert not vae.training and card["data"]["exclude_embedded"] is True
    measured = float(interpret.manifold_distance(vae, embedded.x).mean())
    assert measured == pytest.approx(card["metrics"]["embedded_manifold_distance"], rel=1e-3)
    # The manifold is a real one: digits sit far closer to it than uniform noise does.
    noise = interpret.manifold_distance(vae, torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert measured < 0.5 * float(noise.mean())


def test_corrupted_or_missing_weights_get_a_clear_error(tmp_path):
    name = SHIPPED[0]
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.ZOO_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    assert zoo.load(name, root=tmp_path) is not None
    raw = bytearray((tmp_path / f"{name}.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / f"{name}.safetensors").write_bytes(bytes(raw))
    with pytest.raises(zoo.ZooError, match="corrupted: sha256 .* differs from the card's"):
        zoo.load(name, root=tmp_path)
    (tmp_path / f"{name}.safetensors").unlink()
    with pytest.raises(zoo.ZooError, match="weights of .* are missing.*robustlab zoo build"):
        zoo.load(name, root=tmp_path)
    with pytest.raises(zoo.ZooError, match="no zoo model named 'mnist-huge'"):
        zoo.load("mnist-huge")


def test_build_writes_weights_and_a_card_that_load_accepts(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=300).astype(np.uint8)
    write_mnist_like(tmp_path / "data", "MNIST", images, labels, images[:10], labels[:10])
    monkeypatch.setitem(zoo.RECIPES, "mnist-tiny", ("small-cnn", dict(method="fgsm_rs", eps=0.1, epochs=2,
                                                                     batch_size=100)))
    out = tmp_path / "zoo"
    info = zoo.build("mnist-tiny", out=out, data_root=tmp_path / "data", progress=False)
    assert zoo.names(out) == ["mnist-tiny"]
    card = json.loads((out / "mnist-tiny.json").read_text())
    assert card == info and card["data"]["examples"] == 300 and card["training"]["epochs_run"] == 2
    assert card["parameters"] == 166_406 and len(card["sha256"]) == 64
    model = zoo.load("mnist-tiny", root=out)
    emb = data.embedded_mnist()
    assert evaluate_accuracy(model, emb.x, emb.y) == card["metrics"]["embedded_clean_accuracy"]
    assert (out / "checkpoints" / "mnist-tiny.pt").exists()
    with pytest.raises(zoo.ZooError, match="no recipe for 'mnist-nothing'"):
        zoo.build("mnist-nothing", out=out, data_root=tmp_path / "data")


@pytest.mark.parametrize("method", ["vae", "vaegan"])
def test_build_trains_a_vae_recipe(tmp_path, monkeypatch, method):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=200).astype(np.uint8)
    write_mnist_like(tmp_path / "data", "MNIST", images, labels, images[:10], labels[:10])
    monkeypatch.setitem(zoo.RECIPES, "mnist-tiny-vae", ("vae", dict(method=method, latent=3, hidden=16, epochs=2,
                                                                    batch_size=50, lr=1e-3, seed=0)))
    out = tmp_path / "zoo"
    info = zoo.build("mnist-tiny-vae", out=out, data_root=tmp_path / "data", progress=False)
    assert info["architecture_kwargs"] == {"latent": 3, "hidden": 16} and info["training"]["epochs_run"] == 2
    assert info["method"] == method and info["architecture"] == "vae"
    assert zoo.classifiers(out) == [] and zoo.names(out) == ["mnist-tiny-vae"]
    vae = zoo.load("mnist-tiny-vae", root=out)
    from robustlab import interpret
    emb = data.embedded_mnist()
    assert float(interpret.manifold_distance(vae, emb.x).mean()) == pytest.approx(
        info["metrics"]["embedded_manifold_distance"], rel=1e-4)


def test_update_metrics_merges_into_the_card(tmp_path):
    name = SHIPPED[0]
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.ZOO_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    before = zoo.card(name, tmp_path)
    zoo.update_metrics(name, {"report": {"rows": []}}, root=tmp_path)
    after = zoo.card(name, tmp_path)
    assert after["metrics"]["report"] == {"rows": []}
    assert after["metrics"]["embedded_clean_accuracy"] == before["metrics"]["embedded_clean_accuracy"]
    zoo.load(name, root=tmp_path)  # the checksum covers the weights, not the card
