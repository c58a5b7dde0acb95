"""Image data: Fashion-MNIST from Debian's idx files, and the CIFAR-10
python-pickle layout for users who have it.

Images stay uint8 (N, C, H, W); the exported programs take float32 in [0, 1]
and normalize inside. The validation split is a seeded 10% of the training
set (these sets have no speaker-like groups; `group` is the source index).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from knowcache.data.dataset import Dataset, Split
from knowcache.tasks import CIFAR10_LABELS, FASHION_MNIST_LABELS

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _open(path: Path) -> bytes:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as f:
                return f.read()
    raise FileNotFoundError(f"{path}[.gz] not found; install Debian's dataset-fashion-mnist "
                            "(`make setup`) or pass the folder holding the idx files")


def read_idx(data: bytes, name: str = "<idx>") -> np.ndarray:
    """An idx array (the MNIST file format): magic, dims, then big-endian data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an idx file")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{name}: unknown idx element type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{name}: truncated header ({len(data)} bytes; {ndim} dimensions "
                         f"need {4 + 4 * ndim})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{name}: header says {dims} but holds {body.size} values (truncated?)")
    return body.reshape(dims)


def _val_split(x: np.ndarray, y: np.ndarray, seed: int, fraction: float = 0.1):
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    return Split(x[train], y[train], train.astype(np.int32)), Split(x[val], y[val], val.astype(np.int32))


def fashion_mnist(directory: str | Path = FASHION_MNIST_DIR, seed: int = 0) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder; install Debian's "
                                "dataset-fashion-mnist (`make setup`) or pass --path")
    arrays = {}
    for split, (images, labels) in _IDX.items():
        x = read_idx(_open(directory / images), images)
        y = read_idx(_open(directory / labels), labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{directory}: {images} and {labels} do not match")
        arrays[split] = (x[:, None].astype(np.uint8), y.astype(np.int16))
    train, val = _val_split(*arrays["train"], seed)
    xt, yt = arrays["test"]
    test = Split(xt, yt, np.arange(len(yt), dtype=np.int32))
    return Dataset("vision", FASHION_MNIST_LABELS, train, val, test, "fashion-mnist",
                   {"seed": seed, "path": str(directory)})


def cifar10(directory: str | Path, seed: int = 0) -> Dataset:
    """CIFAR-10 'python version': data_batch_1..5, test_batch, batches.meta."""
    directory = Path(directory)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected the CIFAR-10 python layout "
                                    "(data_batch_1..5, test_batch)")
        with open(path, "rb") as f:
            try:
                d = pickle.load(f, encoding="bytes")
            except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
                raise ValueError(f"{path}: not a CIFAR-10 batch ({e})") from e
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d[b"labels"], np.int16)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    train, val = _val_split(np.concatenate([p[0] for p in parts]),
                            np.concatenate([p[1] for p in parts]), seed)
    xt, yt = batch("test_batch")
    return Dataset("vision", CIFAR10_LABELS, train, val, Split(xt, yt, np.arange(len(yt))),
                   "cifar10", {"seed": seed, "path": str(directory)})
