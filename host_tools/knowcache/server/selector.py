"""The cloud's partition selector (CacheNet): which partition a device should
cache for an input, from the full model's answer. Read from the manifest's
``selector`` field, which the build writes next to the partitions:

    "selector": {"kind": "partition_mass", "partitions": ["p0", "p1", ...]}

(Not to be confused with layer caching's exit selector, GATI's learned gate on
a cache head: ``knowcache.layer_cache``.)"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from knowcache.manifest import ManifestFile

KINDS = ("partition_mass",)


class PartitionSelector:
    """Which partition an input belongs to, from the full model's probabilities:
    the partition holding the most probability mass (its classes' sum)."""

    def __init__(self, groups: Sequence[Sequence[int]], classes: int):
        self.groups = [list(g) for g in groups]
        covered = sorted(c for g in self.groups for c in g)
        if covered != list(range(classes)):
            raise ValueError("partitions must cover every class exactly once")
        self.matrix = np.zeros((classes, len(self.groups)), np.float32)
        for p, g in enumerate(self.groups):
            self.matrix[g, p] = 1.0

    def select(self, probs: np.ndarray) -> np.ndarray:
        """(N, C) or (C,) probabilities -> partition index per row."""
        return np.argmax(np.atleast_2d(probs) @ self.matrix, axis=1)


def from_manifest(models: ManifestFile) -> tuple[list[str], Optional[PartitionSelector]]:
    """(partition ids, selector) the manifest's ``selector`` names; ([], None) when
    it has none (the server then hints nothing)."""
    spec = models.selector
    if not spec:
        return [], None
    if spec.get("kind") not in KINDS:
        raise ValueError(f"{models.path}: selector kind {spec.get('kind')!r} is not one of "
                         f"{', '.join(KINDS)}")
    ids = list(spec.get("partitions", []))
    labels = models.labels
    groups = []
    for pid in ids:
        entry = models.entry(pid)
        if entry is None:
            raise ValueError(f"{models.path}: the selector names partition {pid!r}, which the "
                             "manifest does not list")
        groups.append([labels.index(c) for c in entry["labels"] if c != entry.get("other_label")])
    return ids, PartitionSelector(groups, len(labels))
