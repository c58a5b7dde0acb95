"""The in-memory form every loader returns, and where data sets are cached.

A data set is three splits of (x, y, group): x is int16 waveform (kws) or
uint8 images (vision), y the class index into ``labels``, group who made
the sample (a synthetic voice, a speaker), so splits can be checked to share
no group. Saved as one compressed .npz per data set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowcache.atomic import replace_atomically

CACHE_ENV = "KNOWCACHE_DATA_DIR"


def cache_dir() -> Path:
    """$KNOWCACHE_DATA_DIR, else $XDG_CACHE_HOME/knowcache, else ~/.cache/knowcache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "knowcache"


def model_input(task: str, x: np.ndarray) -> np.ndarray:
    """Stored samples to the programs' float32 input: waveform in [-1, 1], pixels in [0, 1]."""
    return x.astype(np.float32) / (32768.0 if task == "kws" else 255.0)


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> "Split":
        return Split(self.x[idx], self.y[idx], self.group[idx])


@dataclass
class Dataset:
    task: str
    labels: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    source: str
    meta: dict

    SPLITS = ("train", "val", "test")

    def split(self, name: str) -> Split:
        if name not in self.SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {self.SPLITS}")
        return getattr(self, name)

    def save(self, path: str | os.PathLike) -> Path:
        arrays = {}
        for s in self.SPLITS:
            sp = self.split(s)
            arrays.update({f"{s}_x": sp.x, f"{s}_y": sp.y, f"{s}_group": sp.group})
        header = {"task": self.task, "labels": list(self.labels), "source": self.source,
                  "meta": self.meta}
        # np.savez adds ".npz" to names without it, so the temporary file ends in it.
        return replace_atomically(path, lambda tmp: np.savez_compressed(
            tmp, header=np.array(json.dumps(header)), **arrays), suffix=".tmp.npz")

    @staticmethod
    def load(path: str | os.PathLike) -> "Dataset":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no data set at {path}; create it with `knowcache data ...`")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                splits = {s: Split(z[f"{s}_x"], z[f"{s}_y"], z[f"{s}_group"])
                          for s in Dataset.SPLITS}
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{path} is not a knowcache data set ({e}); delete it and "
                             "regenerate it with `knowcache data ...`") from e
        return Dataset(header["task"], tuple(header["labels"]), splits["train"], splits["val"],
                       splits["test"], header["source"], header.get("meta", {}))

    def summary(self) -> str:
        parts = [f"{s} {len(self.split(s))} ({len(set(self.split(s).group.tolist()))} groups)"
                 for s in self.SPLITS]
        return f"{self.task} from {self.source}: {len(self.labels)} classes; " + ", ".join(parts)
