"""User recordings (from `knowcache listen --record`) folded into the training split.

Layout: ``<root>/<word>/*.wav``, the folder naming the label, so a user
relabels a wrong recording by moving it. Each clip is resampled to 16 kHz and
cut to the loudest second (or centred in one). Files already added (same
sha256) are skipped, so adding a folder twice changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from knowcache.data import folders
from knowcache.data.dataset import Dataset, Split


def fold_into(ds: Dataset, root: Path) -> tuple[Dataset, int]:
    """``ds`` with the new recordings under ``root`` appended to its train split."""
    found = folders.load(root, ds.labels)
    clips, ys, digests = found.x, found.y, found.sha256
    seen = {d for entry in ds.meta.get("added", []) for d in entry["sha256"]}
    new = [i for i, d in enumerate(digests) if d not in seen]
    if not new:
        return ds, 0
    group = f"user:{Path(root).resolve().name}"
    train = Split(np.concatenate([ds.train.x, clips[new]]),
                  np.concatenate([ds.train.y, np.array([ys[i] for i in new], ds.train.y.dtype)]),
                  np.concatenate([ds.train.group.astype(str), np.array([group] * len(new))]))
    meta = {**ds.meta, "added": [*ds.meta.get("added", []),
                                 {"folder": str(Path(root).resolve()),
                                  "sha256": [digests[i] for i in new]}]}
    return Dataset(ds.task, ds.labels, train, ds.val, ds.test, ds.source, meta), len(new)
