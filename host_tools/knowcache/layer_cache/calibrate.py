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
    default 0). Searched over a grid of score quantiles per exit (exhaustive:
    three exits make ~10^4 combinations)."""
    n_exits = len(exits)
    costs = list(costs) if costs is not None else [(i + 1) / (n_exits + 1)
                                                  for i in range(n_exits)]
    own = list(exit_costs) if exit_costs is not None else [0.0] * n_exits
    result = [dict() for _ in exits]
    n = len(reference)
    sub = np.zeros(n, bool) if subset is None else np.asarray(subset, bool)
    if sub.shape != (n,):
        raise ValueError(f"subset has {sub.shape} entries for {n} calibration samples")
    sub_budget = (1 - target) * int(sub.sum())
    for kind in kinds:
        per = [scores(kind, out, reference, capacity) for out in exits]
        grids = []
        for score, answer in per:
            finite = score[np.isfinite(score)]
            qs = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, QUANTILES))) \
                if finite.size >= MIN_ACCEPTED else np.array([])
            grids.append([None, *qs.tolist()])
        best = (float("inf"), [None] * n_exits)      # filled by running everything, no exits

        def search(i: int, remaining: np.ndarray, errors: int, sub_errors: int, spent: float,
                   chosen: list):
            nonlocal best
            if i == n_exits:
                total = spent + remaining.sum() * 1.0
                if total / n < best[0] and _holds(n - errors, n, target, z):
                    best = (total / n, list(chosen))
                return
            score, answer = per[i]
            agree = answer == reference
            for t in grids[i]:
                if t is None:
                    search(i + 1, remaining, errors, sub_errors, spent, chosen + [None])
                    continue
                hit = remaining & (score >= t)
                k = int(hit.sum())
                if k < MIN_ACCEPTED:
                    continue
                wrong_at = hit & ~agree
                wrong, sub_wrong = int(wrong_at.sum()), int((wrong_at & sub).sum())
                if not _holds(k - wrong, k, per_exit, 0.0) or errors + wrong > (1 - target) * n \
                        or sub_errors + sub_wrong > sub_budget:
                    continue
                search(i + 1, remaining & ~hit, errors + wrong, sub_errors + sub_wrong,
                       spent + remaining.sum() * own[i] + k * costs[i], chosen + [t])
        search(0, np.ones(n, bool), 0, 0, 0.0, [])
        for i, t in enumerate(best[1]):
            result[i][kind] = None if t is None else to_threshold(kind, t)
    return result


def _holds(agree: int, n: int, target: float, z: float) -> bool:
    if n == 0:
        return True
    if z <= 0:
        return agree / n >= target
    return float(lower_bound(np.array(agree, float), np.array(n, float), z)) >= target


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
