"""Data loading through torchvision's real loaders, on tiny files in their on-disk formats."""

import hashlib
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab import data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes an uint8 array in the IDX format of MNIST's raw files (big-endian header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str, train_images, train_labels, test_images, test_labels):
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", train_images)
    write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    write_idx(raw / "t10k-images-idx3-ubyte", test_images)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)


@pytest.fixture
def tiny_mnist(tmp_path, embedded):
    """6 train images, two of them equal to embedded digits 17 and 4321, and 4 test images."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    emb = (embedded.x * 255).round().to(torch.uint8).squeeze(1).numpy()
    train[1], train[4] = emb[17], emb[4321]
    train_labels = np.array([3, int(embedded.y[17]), 5, 7, int(embedded.y[4321]), 9], dtype=np.uint8)
    test = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_mnist_like(tmp_path, "MNIST", train, train_labels, test, np.array([1, 2, 3, 4], np.uint8))
    return tmp_path, train, train_labels, test


def test_mnist_train_and_test_through_torchvision(tiny_mnist):
    root, train, labels, test = tiny_mnist
    x, y = data.load("mnist", "train", root=root, download=False)
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    torch.testing.assert_close(x[:, 0], torch.from_numpy(train).float() / 255)
    xt, yt = data.load("mnist", "test", root=root, download=False)
    assert xt.shape == (4, 1, 28, 28) and yt.tolist() == [1, 2, 3, 4]
    assert float(xt.min()) >= 0 and float(xt.max()) <= 1


def test_exclude_embedded_drops_exact_matches_only(tiny_mnist):
    root, train, labels, _ = tiny_mnist
    x, y = data.load("mnist", "train", root=root, download=False, exclude_embedded=True)
    assert y.tolist() == [3, 5, 7, 9]
    torch.testing.assert_close(x[:, 0], torch.from_numpy(train[[0, 2, 3, 5]]).float() / 255)


def test_exclude_embedded_is_exact_not_approximate(tmp_path, embedded):
    emb = (embedded.x[:2] * 255).round().to(torch.uint8).squeeze(1).numpy().copy()
    emb[1, 14, 14] ^= 1  # one pixel off by one grey level: no longer the same image
    write_mnist_like(tmp_path, "MNIST", emb, np.array([0, 0], np.uint8), emb, np.array([0, 0], np.uint8))
    x, _ = data.load("mnist", "train", root=tmp_path, download=False, exclude_embedded=True)
    assert x.shape[0] == 1


def test_fashion_mnist(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    write_mnist_like(tmp_path, "FashionMNIST", imgs, np.array([0, 8, 9], np.uint8), imgs[:2],
                     np.array([4, 2], np.uint8))
    x, y = data.load("fashion-mnist", "train", root=tmp_path, download=False)
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [0, 8, 9]
    torch.testing.assert_close(x[:, 0], torch.from_numpy(imgs).float() / 255)
    assert data.load("Fashion-MNIST", "test", root=tmp_path, download=False).y.tolist() == [4, 2]


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    batches = {}
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # R plane, G plane, B plane
        labels = rng.integers(0, 10, size=n).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": rows, "labels": labels}))
        batches[name] = (rows, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    md5 = lambda name: hashlib.md5((folder / name).read_bytes()).hexdigest()
    # The real integrity check runs, against the checksums of these tiny files.
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": md5("batches.meta")})
    x, y = data.load("cifar10", "test", root=tmp_path, download=False)
    rows, labels = batches["test_batch"]
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == labels
    # Channel c, row h, column w sits at c*1024 + h*32 + w in the pickled row.
    torch.testing.assert_close(x, torch.from_numpy(rows).float().view(3, 3, 32, 32) / 255)
    xtr, ytr = data.load("cifar10", "train", root=tmp_path, download=False)
    assert xtr.shape == (10, 3, 32, 32)
    assert ytr.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])


def test_offline_mnist_test_falls_back_to_the_embedded_set(tmp_path):
    with pytest.warns(data.EmbeddedDataNotice, match="embedded held-out set of 5,000"):
        x, y = data.load("mnist", "test", root=tmp_path, download=False)
    ref = data.embedded_mnist()
    assert torch.equal(x, ref.x) and torch.equal(y, ref.y)


def _no_network(monkeypatch):

    calls = []

    def fail(self):
        calls.append(type(self).__name__)
        raise urllib.error.URLError("no network")

    for cls in ("MNIST", "FashionMNIST", "CIFAR10"):
        monkeypatch.setattr(f"torchvision.datasets.{cls}.download", fail)
    return calls


def test_download_none_tries_a_download_then_falls_back(tmp_path, monkeypatch):
    calls = _no_network(monkeypatch)
    with pytest.warns(data.EmbeddedDataNotice):
        x, _ = data.load("mnist", "test", root=tmp_path)
    assert calls == ["MNIST"] and x.shape == (5000, 1, 28, 28)


def test_download_true_that_fails_raises_and_says_where_files_go(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(RuntimeError, match=r"could not download mnist.*MNIST/raw.*download=False"):
        data.load("mnist", "test", root=tmp_path, download=True)


@pytest.mark.parametrize("name,split,where", [("mnist", "train", "MNIST/raw"),
                                              ("fashion-mnist", "test", "FashionMNIST/raw"),
                                              ("cifar10", "train", "cifar-10-batches-py")])
def test_missing_datasets_raise_and_say_where_files_go(tmp_path, monkeypatch, name, split, where):
    _no_network(monkeypatch)
    with pytest.raises(FileNotFoundError, match=rf"{name} {split} split not found.*{where}.*ROBUSTLAB_DATA"):
        data.load(name, split, root=tmp_path)


def test_root_from_environment_then_user_cache(tiny_mnist, monkeypatch, tmp_path):
    root = tiny_mnist[0]
    monkeypatch.setenv("ROBUSTLAB_DATA", str(root))
    assert data.default_root() == root
    assert data.load("mnist", "test", download=False).y.tolist() == [1, 2, 3, 4]
    monkeypatch.delenv("ROBUSTLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_root() == tmp_path / "cache" / "robustlab"


def test_embedded_set(embedded):
    x, y = embedded
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal((x * 255).round() / 255, x)  # 8-bit grey levels
    assert torch.bincount(y, minlength=10).tolist() == [500] * 10
    assert torch.equal(data.load("mnist", "embedded").x, x)


def test_embedded_set_is_a_fresh_copy_each_time():
    a = data.embedded_mnist()
    a.x.zero_()
    assert float(data.embedded_mnist().x.max()) == 1.0


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(name="svhn", split="train"), ValueError, "'mnist', 'fashion-mnist', 'cifar10'"),
    (dict(name="mnist", split="val"), ValueError, "'train', 'test', 'embedded'"),
    (dict(name="cifar10", split="embedded"), ValueError, "'train', 'test'"),
    (dict(name="mnist", split="test", exclude_embedded=True), ValueError, "load\\('mnist', 'train'\\) only"),
    (dict(name="mnist", split="train", download="yes"), ValueError, "download must be None, True or False"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.load(kwargs.pop("name"), kwargs.pop("split"), **kwargs)


def test_loader_batches_and_shuffles_reproducibly(embedded):
    x, y = embedded.x[:50], embedded.y[:50]
    batches = list(data.loader(x, y, batch_size=16))
    assert [b[0].shape[0] for b in batches] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    order = lambda seed: torch.cat([b[1] for b in data.loader(
        x, torch.arange(50), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))])
    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    assert sorted(order(1).tolist()) == list(range(50))
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        data.loader(x * 255, y)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.loader(x, y, batch_size=0)


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(),
                    reason="the full MNIST is not beside the checkout")
def test_full_mnist_contains_the_embedded_set_exactly_once():
    x, y = data.load("mnist", "train", root=SHARED, download=False)
    kept_x, kept_y = data.load("mnist", "train", root=SHARED, download=False, exclude_embedded=True)
    assert x.shape[0] == 60000 and kept_x.shape[0] == 55000
    assert torch.bincount(y).sum() - torch.bincount(kept_y).sum() == 5000
    assert torch.equal(torch.bincount(y) - torch.bincount(kept_y), torch.full((10,), 500))
    test = data.load("mnist", "test", root=SHARED, download=False)
    assert test.x.shape == (10000, 1, 28, 28)
