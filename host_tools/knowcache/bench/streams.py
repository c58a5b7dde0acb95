"""Query streams with temporal locality, drawn from a test split.

Class popularity is Zipf-distributed over the task's popularity order (rank r
has weight 1 / r**s), and queries come in bursts: with probability
``repeat`` the next query is of the same class as the last one (consecutive
camera frames of one object, a user repeating a command), otherwise a class
is drawn from the Zipf law. The chain's stationary distribution is the Zipf
law itself. Each query is a distinct test sample of its class, drawn without
replacement until the class runs out (then reshuffled). Seeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_REPEAT = {"kws": 0.5, "vision": 0.8}


@dataclass(frozen=True)
class StreamConfig:
    queries: int = 1000
    zipf: float = 1.0
    repeat: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise ValueError("a stream needs at least one query")
        if self.zipf < 0:
            raise ValueError("the Zipf exponent must be >= 0 (0 is uniform)")
        if not 0 <= self.repeat < 1:
            raise ValueError("the repeat probability must be in [0, 1)")


@dataclass
class QueryStream:
    config: StreamConfig
    labels: tuple[str, ...]     # the task's labels
    order: tuple[str, ...]      # popularity order the Zipf ranks follow
    sample: np.ndarray          # index into the test split, per query
    label: np.ndarray           # task class index, per query

    def __len__(self) -> int:
        return len(self.sample)

    def class_mass(self, classes) -> float:
        """Stationary probability that a query is of one of ``classes``."""
        w = zipf_weights(len(self.order), self.config.zipf)
        return float(sum(w[self.order.index(c)] for c in classes if c in self.order))

    def describe(self) -> dict:
        counts = np.bincount(self.label, minlength=len(self.labels))
        runs = 1 + int(np.count_nonzero(np.diff(self.label)))
        return {**asdict(self.config), "classes": len(self.order), "popularity": list(self.order),
                "distinct_samples": int(len(np.unique(self.sample))),
                "mean_burst": round(len(self) / runs, 2),
                "top_class_share": round(float(counts.max() / len(self)), 4)}


def zipf_weights(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def build(y: np.ndarray, labels: tuple[str, ...], popularity: tuple[str, ...],
          config: StreamConfig) -> QueryStream:
    """A stream over the samples ``y`` (class indices into ``labels``)."""
    y = np.asarray(y)
    order = tuple(c for c in popularity if np.any(y == labels.index(c)))
    if not order:
        raise ValueError("the test split has no samples of any class in the popularity order")
    missing = [c for c in popularity if c not in order]
    if missing and len(order) < 2:
        raise ValueError(f"the test split lacks classes {missing}")
    rng = np.random.default_rng(config.seed)
    weights = zipf_weights(len(order), config.zipf)
    pools = {c: [] for c in order}
    by_class = {c: np.flatnonzero(y == labels.index(c)) for c in order}

    def take(c: str) -> int:
        if not pools[c]:
            pools[c] = list(rng.permutation(by_class[c]))
        return int(pools[c].pop())

    samples, classes = [], []
    current = None
    for _ in range(config.queries):
        if current is None or rng.random() >= config.repeat:
            current = order[int(rng.choice(len(order), p=weights))]
        samples.append(take(current))
        classes.append(labels.index(current))
    return QueryStream(config, labels, order, np.array(samples), np.array(classes))
