"""User recordings (from `knowcache listen --record`) folded into the training split.

Layout: ``<root>/<word>/*.wav``, the folder naming the label, so a user
relabels a wrong recording by moving it. Each clip is resampled to 16 kHz and
cut to the loudest second (or centred in one). Files already added (same
sha256) are skipped, so adding a folder twice changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from knowcache.data import audio
from knowcache.data.dataset import Dataset, Split

RATE = 16000


def fit_second(x: np.ndarray) -> np.ndarray:
    """The loudest 1 s of ``x`` (by energy), or ``x`` centred in 1 s of zeros."""
    if len(x) <= RATE:
        out = np.zeros(RATE, np.float32)
        start = (RATE - len(x)) // 2
        out[start: start + len(x)] = x
        return out
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(RATE), mode="valid")
    start = int(np.argmax(energy))
    return x[start: start + RATE].astype(np.float32)


def load_folder(root: Path, labels: tuple[str, ...]) -> tuple[list[np.ndarray], list[int], list[str]]:
    """(clips as int16, label indices, sha256 of each file) under ``root/<word>/``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    loose = sorted(root.glob("*.wav"))
    if loose:
        raise ValueError(f"{root} has WAV files at its top level ({loose[0].name}, ...): move each "
                         f"into a folder named by its word, e.g. {root}/yes/ (a wrong prediction "
                         "in a file name is corrected by the folder you choose)")
    clips, ys, digests = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in labels:
            raise ValueError(f"{folder}: {folder.name!r} is not a keyword; folders must be named "
                             f"by one of: {', '.join(labels)}")
        for f in sorted(folder.glob("*.wav")):
            data = f.read_bytes()
            x, rate = audio.read_wav(data)
            if len(x) == 0:
                raise ValueError(f"{f}: the recording is empty")
            clips.append(audio.to_int16(fit_second(audio.resample(x, rate, RATE))))
            ys.append(labels.index(folder.name))
            digests.append(hashlib.sha256(data).hexdigest())
    if not clips:
        raise ValueError(f"{root} has no <word>/*.wav recordings")
    return clips, ys, digests


def fold_into(ds: Dataset, root: Path) -> tuple[Dataset, int]:
    """``ds`` with the new recordings under ``root`` appended to its train split."""
    clips, ys, digests = load_folder(root, ds.labels)
    seen = {d for entry in ds.meta.get("added", []) for d in entry["sha256"]}
    new = [i for i, d in enumerate(digests) if d not in seen]
    if not new:
        return ds, 0
    group = f"user:{Path(root).resolve().name}"
    train = Split(np.concatenate([ds.train.x, np.stack([clips[i] for i in new])]),
                  np.concatenate([ds.train.y, np.array([ys[i] for i in new], ds.train.y.dtype)]),
                  np.concatenate([ds.train.group.astype(str), np.array([group] * len(new))]))
    meta = {**ds.meta, "added": [*ds.meta.get("added", []),
                                 {"folder": str(Path(root).resolve()),
                                  "sha256": [digests[i] for i in new]}]}
    return Dataset(ds.task, ds.labels, train, ds.val, ds.test, ds.source, meta), len(new)
