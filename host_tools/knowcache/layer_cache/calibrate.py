"""Per-exit thresholds for each gate kind, so that the answers an exit
accepts agree with the full model at least ``target`` of the time.

Exits are calibrated in order, each on the samples the earlier exits of the
same gate kind did not take, which is what the runtime will show it. The
agreement of an accepted set is judged by its Wilson lower bound (one
standard error), so thresholds from small slices (the online learner's
first retrains) are conservative rather than lucky. Gate
scores (higher = surer), as the C++ gates compute them:

  learned     sigmoid(selector logit)           hit when >= threshold
  confidence  max softmax probability           hit when >= threshold
  entropy     normalized predictive entropy     hit when <= threshold
  activation  cosine distance to the nearest    hit when <= threshold
              cached compact feature (int8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from knowcache.build.calibration import gate_scores

GATES = ("learned", "confidence", "entropy", "activation")
MIN_ACCEPTED = 20          # fewer accepted calibration samples: the exit stays off
CONFIDENCE_Z = 1.0         # the system's agreement is judged by its Wilson lower bound
PER_EXIT_AGREEMENT = 0.99  # each exit's accepted answers agree at least this often
QUANTILES = 21             # threshold candidates per exit


@dataclass
class ExitOutputs:
    """What exit i produced for a batch: predictor logits, selector logits, features."""
    logits: np.ndarray     # (n, classes)
    selector: np.ndarray   # (n,)
    feature: np.ndarray    # (n, dim)


def quantize(features: np.ndarray) -> np.ndarray:
    """int8 per vector, as the C++ activation cache stores them."""
    scale = np.abs(features).max(1, keepdims=True)
    scale[scale == 0] = 1.0
    return np.round(features / scale * 127.0).astype(np.int8)


def nearest_in_stream(features: np.ndarray, labels: np.ndarray, capacity: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, the cosine distance to and the label of its nearest
    neighbour among the previous ``capacity`` samples (inf, -1 for the first)."""
    q = quantize(features).astype(np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    n = len(q)
    dist = np.full(n, np.inf, np.float32)
    label = np.full(n, -1, np.int64)
    block = 512
    for start in range(1, n, block):
        stop = min(n, start + block)
        lo = max(0, start - capacity)
        sim = q[start:stop] @ q[lo:stop - 1].T
        for r, i in enumerate(range(start, stop)):
            window = sim[r, max(0, i - capacity) - lo:i - lo]
            if window.size:
                j = int(window.argmax())
                dist[i] = 1.0 - window[j]
                label[i] = labels[max(0, i - capacity) + j]
    return dist, label


def scores(kind: str, out: ExitOutputs, reference: np.ndarray, capacity: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(score where higher means surer, the exit's answer) for one gate kind."""
    if kind == "learned":
        return 1.0 / (1.0 + np.exp(-out.selector.astype(np.float64))), out.logits.argmax(1)
    if kind in ("confidence", "entropy"):
        # The runtime's own gate, so host thresholds and device decisions agree exactly.
        entropy, peak, argmax, _ = gate_scores(out.logits)
        return (peak, argmax) if kind == "confidence" else (1.0 - entropy, argmax)
    if kind == "activation":
        dist, label = nearest_in_stream(out.feature, reference, capacity)
        return -dist, label
    raise ValueError(f"unknown gate {kind!r}; choose one of {GATES}")


def to_threshold(kind: str, score: float) -> float:
    """A score (higher = surer) as the threshold the runtime compares; the map is
    its own inverse, so it also turns a threshold back into a score."""
    return {"entropy": 1.0 - score, "activation": -score}.get(kind, score)


def lower_bound(agree: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Wilson score lower bound of an agreement rate (``agree`` of ``n``)."""
    p = agree / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def calibrate(exits: list[ExitOutputs], reference: np.ndarray, target: float,
              capacity: int = 512, kinds: tuple[str, ...] = GATES,
              costs: list[float] | None = None, per_exit: float = PER_EXIT_AGREEMENT,
              z: float = CONFIDENCE_Z, exit_costs: list[float] | None = None,
              subset: np.ndarray | None = None) -> list[dict]:
    """Thresholds per exit: [{"learned": t | None, ...}, ...]; ``reference`` is
    the full model's answer for each calibration sample, in stream order.

    Per gate kind, the thresholds that spend the fewest FLOPs such that
    (a) every exit's accepted answers agree with the full model >= ``per_exit``,
    (b) all answers together (exits, and the full model for the rest) agree
    >= ``target``, judged by the Wilson lower bound (``z`` standard errors), and
    (c) so do the answers on ``subset`` (a mask: the real recordings among
    synthesized ones, so that the many synthesized samples cannot carry
    thresholds the real voices do not support), as a plain rate: such a subset
    is small. Costs are fractions of the whole model: ``costs[i]`` what a query
    answered at exit i has spent in the stages (by default exits are assumed
    to get cheaper the earlier they are), ``exit_costs[i]`` what running exit i
    costs every query that reaches it (an exit without a threshold is not run;
    default 0). The earlier exits' thresholds are searched over a grid of
    score quantiles (exhaustive: three exits make ~400 combinations), then each
    is refined between its grid neighbours; the last exit's threshold is the
    best of all its scores for each of those choices (``_Search``)."""
    n_exits = len(exits)
    costs = list(costs) if costs is not None else [(i + 1) / (n_exits + 1)
                                                  for i in range(n_exits)]
    own = list(exit_costs) if exit_costs is not None else [0.0] * n_exits
    result = [dict() for _ in exits]
    n = len(reference)
    sub = np.zeros(n, bool) if subset is None else np.asarray(subset, bool)
    if sub.shape != (n,):
        raise ValueError(f"subset has {sub.shape} entries for {n} calibration samples")
    if not exits:
        return result
    for kind in kinds:
        per = [scores(kind, out, reference, capacity) for out in exits]
        search = _Search(per, reference, costs, own, sub, target, per_exit, z)
        grids = [search.grid(i, np.linspace(0.0, 1.0, QUANTILES)) for i in range(n_exits - 1)]
        cost, chosen = search.best_over(grids)
        # Refine each earlier exit between its grid neighbours, QUANTILES levels
        # finer; the last exit is exact either way.
        step = 1.0 / (QUANTILES - 1)
        for i in range(n_exits - 1):
            if chosen[i] is None:
                continue
            level = search.level(i, chosen[i])
            fine = [[t] for t in chosen[:-1]]
            fine[i] = search.grid(i, np.linspace(max(0.0, level - step),
                                                 min(1.0, level + step), QUANTILES), off=False)
            refined = search.best_over(fine)
            if refined[0] < cost:
                cost, chosen = refined
        for i, t in enumerate(chosen):
            result[i][kind] = None if t is None else to_threshold(kind, t)
    return result


class _Search:
    """The cheapest thresholds (scores, higher = surer) for one gate kind: a grid
    of candidates for every exit but the last (exhaustive), and for the last
    exit the best threshold over all its scores, found at once from the
    remaining samples sorted by score."""

    def __init__(self, per, reference, costs, own, sub, target, per_exit, z):
        self.per = per
        self.agree = [answer == reference for _, answer in per]
        self.costs, self.own, self.sub = costs, own, sub
        self.target, self.per_exit, self.z = target, per_exit, z
        self.n = len(reference)
        self.sub_budget = (1 - target) * int(sub.sum())
        # the last exit's finite scores, surest first, sorted once for every choice
        last = per[-1][0]
        self.order = np.flatnonzero(np.isfinite(last))[np.argsort(-last[np.isfinite(last)],
                                                                  kind="stable")]
        self.sorted = last[self.order]
        self.sorted_wrong = ~self.agree[-1][self.order]
        self.sorted_sub_wrong = self.sorted_wrong & sub[self.order]

    def finite(self, i: int) -> np.ndarray:
        score = self.per[i][0]
        return score[np.isfinite(score)]

    def grid(self, i: int, levels: np.ndarray, off: bool = True) -> list:
        """Candidate thresholds at quantile ``levels`` of exit i's scores (and
        None, the exit off, when ``off``)."""
        finite = self.finite(i)
        qs = np.unique(np.quantile(finite, levels)) if finite.size >= MIN_ACCEPTED else []
        return ([None] if off else []) + [float(q) for q in qs]

    def level(self, i: int, t: float) -> float:
        """The quantile level of threshold ``t`` among exit i's scores."""
        finite = self.finite(i)
        return float((finite < t).mean()) if finite.size else 0.0

    def best_over(self, grids: list[list]) -> tuple[float, list]:
        """(mean cost, thresholds) of the cheapest choice from ``grids`` for the
        earlier exits and any threshold for the last; all-off if none holds."""
        n_exits = len(self.per)
        best = [float("inf"), [None] * n_exits]

        def walk(i: int, remaining: np.ndarray, errors: int, sub_errors: int, spent: float,
                 chosen: list):
            if i == n_exits - 1:
                cost, t = self._last(remaining, errors, sub_errors, spent)
                if cost < best[0]:
                    best[:] = [cost, chosen + [t]]
                return
            score = self.per[i][0]
            for t in grids[i]:
                if t is None:
                    walk(i + 1, remaining, errors, sub_errors, spent, chosen + [None])
                    continue
                hit = remaining & (score >= t)
                k = int(hit.sum())
                if k < MIN_ACCEPTED:
                    continue
                wrong_at = hit & ~self.agree[i]
                wrong, sub_wrong = int(wrong_at.sum()), int((wrong_at & self.sub).sum())
                if not _holds(k - wrong, k, self.per_exit, 0.0) \
                        or errors + wrong > (1 - self.target) * self.n \
                        or sub_errors + sub_wrong > self.sub_budget:
                    continue
                walk(i + 1, remaining & ~hit, errors + wrong, sub_errors + sub_wrong,
                     spent + remaining.sum() * self.own[i] + k * self.costs[i], chosen + [t])

        walk(0, np.ones(self.n, bool), 0, 0, 0.0, [])
        return best[0], best[1]

    def _last(self, remaining: np.ndarray, errors: int, sub_errors: int,
              spent: float) -> tuple[float, Optional[float]]:
        """(mean cost, threshold or None) of the last exit's best choice."""
        i = len(self.per) - 1
        left = int(remaining.sum())
        off = (spent + left) / self.n if _holds(self.n - errors, self.n, self.target,
                                                 self.z) else float("inf")
        take = remaining[self.order]
        if take.sum() < MIN_ACCEPTED:
            return off, None
        s = self.sorted[take]
        wrong = np.cumsum(self.sorted_wrong[take])
        sub_wrong = np.cumsum(self.sorted_sub_wrong[take])
        # a threshold at s[j] takes every sample scoring >= s[j]: the ends of ties
        ends = np.flatnonzero(np.append(s[1:] < s[:-1], True))
        k = ends + 1
        wrong, sub_wrong = wrong[ends], sub_wrong[ends]
        total = errors + wrong
        ok = ((k >= MIN_ACCEPTED) & _holds(k - wrong, k, self.per_exit, 0.0)
              & (total <= (1 - self.target) * self.n)
              & (sub_errors + sub_wrong <= self.sub_budget)
              & _holds(self.n - total, self.n, self.target, self.z))
        if not ok.any():
            return off, None
        cost = (spent + left * self.own[i] + k * self.costs[i] + (left - k)) / self.n
        cost = np.where(ok, cost, np.inf)
        j = int(cost.argmin())
        if cost[j] >= off:
            return off, None
        # halfway to the next lower score: the same samples, with a margin for the
        # runtime's float32 gate
        at = ends[j]
        t = float(s[at]) if at + 1 == len(s) else float((s[at] + s[at + 1]) / 2)
        return float(cost[j]), t


def _holds(agree, n, target: float, z: float):
    """Whether ``agree`` of ``n`` reach ``target`` (plain rate, or its Wilson lower
    bound for ``z`` > 0); elementwise for arrays. Nothing accepted always holds."""
    agree, n = np.asarray(agree, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = agree / n if z <= 0 else lower_bound(agree, n, z)
    return (n == 0) | (rate >= target)


def simulate(exits: list[ExitOutputs], reference: np.ndarray, thresholds: list[dict],
             kind: str, capacity: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(exit index per sample, -1 for the full model; the answer given)."""
    n = len(reference)
    where = np.full(n, -1)
    answer = reference.copy()
    for i, out in enumerate(exits):
        t = thresholds[i].get(kind)
        if t is None:
            continue
        score, ans = scores(kind, out, reference, capacity)
        hit = (where == -1) & (score >= to_threshold(kind, t))
        where[hit] = i
        answer[hit] = ans[hit]
    return where, answer
