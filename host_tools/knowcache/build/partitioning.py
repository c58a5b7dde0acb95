"""CacheNet partitions: split the classes into K groups the full model confuses
among themselves, so each partition covers one coherent region of the input
space. Which partition an input belongs to is the cloud's business
(``knowcache.server.selector``)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def soft_confusion(probs: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    """(C, C): mean full-model probability of class j over inputs of class i."""
    conf = np.zeros((classes, classes))
    for c in range(classes):
        rows = probs[y == c]
        if len(rows):
            conf[c] = rows.mean(axis=0)
    return conf


def group_classes(confusion: np.ndarray, k: int) -> list[list[int]]:
    """K groups of at most ceil(C / K) classes, the most mutually confused together.

    Average-linkage agglomeration on the symmetrized confusion, never merging
    past the size cap (so every partition fits the same slot budget), then
    the K largest clusters seed the partitions and the remaining clusters join
    the partition they are most confused with that has room (split into
    single classes when none has). Deterministic: ties break by class index.
    """
    c = confusion.shape[0]
    if not 1 <= k <= c:
        raise ValueError(f"--k must be between 1 and the number of classes ({c}), got {k}")
    sim = confusion + confusion.T
    np.fill_diagonal(sim, 0.0)
    cap = math.ceil(c / k)
    clusters = [[i] for i in range(c)]
    while len(clusters) > k:
        best, pair = -1.0, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                if len(clusters[a]) + len(clusters[b]) <= cap:
                    s = sim[np.ix_(clusters[a], clusters[b])].mean()
                    if s > best:
                        best, pair = s, (a, b)
        if pair is None:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    clusters.sort(key=lambda g: (-len(g), g[0]))
    groups = [list(g) for g in clusters[:k]]
    pending = clusters[k:]
    while pending:
        g = pending.pop(0)
        room = [i for i in range(k) if len(groups[i]) + len(g) <= cap]
        if not room:                 # too big for any partition: place its classes one by one
            pending[0:0] = [[x] for x in g]
            continue
        target = max(room, key=lambda i: (sim[np.ix_(g, groups[i])].mean(), -i))
        groups[target] = sorted(groups[target] + g)
    return sorted(groups, key=lambda g: g[0])


def within_group_confusion(confusion: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Share of the full model's off-diagonal confusion that stays inside a group."""
    off = confusion.copy()
    np.fill_diagonal(off, 0.0)
    inside = sum(off[np.ix_(g, g)].sum() for g in groups)
    return float(inside / off.sum()) if off.sum() > 0 else 1.0
