"""Per-exit thresholds for each gate kind, so that the answers an exit
accepts agree with the full model at least ``target`` of the time.

Exits are calibrated in order, each on the samples the earlier exits of the
same gate kind did not take, which is what the runtime will show it. Gate
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

GATES = ("learned", "confidence", "entropy", "activation")
MIN_ACCEPTED = 20          # fewer accepted calibration samples: the exit stays off


@dataclass
class ExitOutputs:
    """What exit i produced for a batch: predictor logits, selector logits, features."""
    logits: np.ndarray     # (n, classes)
    selector: np.ndarray   # (n,)
    feature: np.ndarray    # (n, dim)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


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
        return 1.0 / (1.0 + np.exp(-out.selector)), out.logits.argmax(1)
    p = softmax(out.logits.astype(np.float64))
    if kind == "confidence":
        return p.max(1), p.argmax(1)
    if kind == "entropy":
        h = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1) / np.log(p.shape[1])
        return 1.0 - h, p.argmax(1)
    if kind == "activation":
        dist, label = nearest_in_stream(out.feature, reference, capacity)
        return -dist, label
    raise ValueError(f"unknown gate {kind!r}; choose one of {GATES}")


def to_threshold(kind: str, score: float) -> float:
    return {"entropy": 1.0 - score, "activation": -score}.get(kind, score)


def pick(score: np.ndarray, agree: np.ndarray, target: float) -> float | None:
    """The lowest score whose accepted set (score >= it) still agrees >= target."""
    order = np.argsort(-score, kind="stable")
    s, a = score[order], agree[order]
    finite = np.isfinite(s)
    s, a = s[finite], a[finite]
    if len(s) < MIN_ACCEPTED:
        return None
    cum = np.cumsum(a) / np.arange(1, len(a) + 1)
    ok = np.nonzero(cum >= target)[0]
    # Only cut between distinct scores, so ties are all in or all out.
    ok = [k for k in ok if k + 1 == len(s) or s[k + 1] < s[k]]
    if not ok or ok[-1] + 1 < MIN_ACCEPTED:
        return None
    return float(s[ok[-1]])


def calibrate(exits: list[ExitOutputs], reference: np.ndarray, target: float,
              capacity: int = 512, kinds: tuple[str, ...] = GATES) -> list[dict]:
    """Thresholds per exit: [{"learned": t | None, ...}, ...]; ``reference`` is
    the full model's answer for each calibration sample, in stream order."""
    result = [dict() for _ in exits]
    for kind in kinds:
        remaining = np.ones(len(reference), bool)
        for i, out in enumerate(exits):
            score, answer = scores(kind, out, reference, capacity)
            agree = answer == reference
            s = np.where(remaining, score, -np.inf)
            t = pick(s, agree, target)
            if t is None:
                result[i][kind] = None
                continue
            result[i][kind] = to_threshold(kind, t)
            remaining &= ~(score >= t)
    return result


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
        hit = (where == -1) & (score >= {"entropy": 1.0 - t, "activation": -t}.get(kind, t))
        where[hit] = i
        answer[hit] = ans[hit]
    return where, answer
