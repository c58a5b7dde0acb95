"""Gate threshold calibration on held-out data.

The device accepts a local answer when its normalized entropy is at or below
the partition's threshold (and the answer is not "other"). We pick the
largest threshold at which the accepted answers agree with the full model at
least ``target`` of the time, so the cache trades no more than 1 - target of
fidelity for its local rate. Entropies come from the runtime's own gate
(`knowcache.runtime.gate_evaluate`), so host and device agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knowcache.runtime import gate_evaluate


# The fewest answers on which a 99% agreement can be told from 100%: a model with
# fewer candidate answers to calibrate on gets a threshold that is mostly luck.
MIN_ANSWERS = 100


@dataclass(frozen=True)
class Calibration:
    threshold: float
    accept_rate: float   # fraction of held-out inputs accepted at the threshold
    agreement: float     # agreement with the full model among accepted answers
    samples: int
    shared: bool = False   # fitted jointly with its peers (calibrate_shared)


def gate_scores(logits: np.ndarray, other_index: int = -1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(normalized entropy, max probability, argmax, is_other) per row, computed by
    the C++ gate."""
    ent, peak, arg, other = [], [], [], []
    for row in np.asarray(logits, dtype=np.float32):
        d = gate_evaluate(row, 1.0, other_index)
        ent.append(d.entropy)
        peak.append(d.max_prob)
        arg.append(d.index)
        other.append(d.is_other)
    return np.array(ent), np.array(peak), np.array(arg), np.array(other, dtype=bool)


def gate_entropies(logits: np.ndarray, other_index: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entropy, argmax, is_other) per row, computed by the C++ gate."""
    ent, _, arg, other = gate_scores(logits, other_index)
    return ent, arg, other


def calibrate_threshold(logits: np.ndarray, reference: np.ndarray, *, other_index: int = -1,
                        target: float = 0.99, groups: list[np.ndarray] | None = None
                        ) -> Calibration:
    """Largest threshold whose accepted answers agree with ``reference`` >= ``target``.

    With ``groups`` (boolean masks, e.g. real recordings and synthesized ones),
    the threshold is the smallest of each group's own, so every group reaches
    the target; accept rate and agreement are then reported over all rows.

    ``reference`` holds, per row, the index (in this partition's label space)
    the full model answers, with answers outside the partition mapped to
    ``other_index``. Returns threshold 0 and accept rate 0 when no threshold
    reaches the target.
    """
    logits = np.asarray(logits)
    reference = np.asarray(reference)
    if logits.ndim != 2 or len(logits) != len(reference) or len(logits) == 0:
        raise ValueError("logits must be (N, C) and reference (N,), with N > 0")
    if not 0.0 < target <= 1.0:
        raise ValueError("target agreement must be in (0, 1]")
    ent, arg, is_other = gate_entropies(logits, other_index)
    if groups:
        t = min(_best(ent[g], arg[g], is_other[g], reference[g], target).threshold
                for g in groups if g.any())
        return _accepting(ent, arg, is_other, reference, t)
    return _best(ent, arg, is_other, reference, target)


def candidate_answers(logits: np.ndarray, other_index: int = -1) -> int:
    """How many rows the model answers with one of its own classes (not "other"):
    the answers a threshold can be calibrated on."""
    _, _, is_other = gate_entropies(logits, other_index)
    return int((~is_other).sum())


def at_threshold(logits: np.ndarray, reference: np.ndarray, threshold: float, *,
                 other_index: int = -1, shared: bool = False) -> Calibration:
    """Accept rate and agreement of a given threshold on these rows."""
    ent, arg, is_other = gate_entropies(logits, other_index)
    return _accepting(ent, arg, is_other, np.asarray(reference), threshold, shared)


def _accepting(ent: np.ndarray, arg: np.ndarray, is_other: np.ndarray, reference: np.ndarray,
               threshold: float, shared: bool = False) -> Calibration:
    """The figures of ``threshold`` over every row (none accepted at 0)."""
    accepted = (~is_other) & (ent <= threshold)
    agree = float((arg[accepted] == reference[accepted]).mean()) if accepted.any() else 1.0
    return Calibration(threshold, float(accepted.mean()) if threshold > 0 else 0.0, agree,
                       len(ent), shared)


def calibrate_shared(parts: list[tuple[np.ndarray, np.ndarray, int]], *,
                     target: float = 0.99) -> float:
    """One threshold for peers of one kind (CacheNet's partitions: same network,
    same training, one gate): the largest whose accepted answers, pooled over
    every part, agree with the reference >= ``target``. ``parts`` holds
    (logits, reference, other_index) per model; normalized entropy makes the
    models' different class counts comparable."""
    if not parts or any(len(lg) == 0 for lg, _, _ in parts):
        raise ValueError("calibrate_shared needs at least one model with rows")
    if not 0.0 < target <= 1.0:
        raise ValueError("target agreement must be in (0, 1]")
    rows = [(*gate_entropies(lg, other), np.asarray(ref)) for lg, ref, other in parts]
    ent, arg, is_other, ref = (np.concatenate(col) for col in zip(*rows))
    return _best(ent, arg, is_other, ref, target).threshold


def _best(ent: np.ndarray, arg: np.ndarray, is_other: np.ndarray, reference: np.ndarray,
          target: float) -> Calibration:
    candidates = ~is_other
    order = np.argsort(ent[candidates], kind="stable")
    ent_c = ent[candidates][order]
    agree_c = (arg[candidates] == reference[candidates])[order]
    best = Calibration(0.0, 0.0, 1.0, len(ent))
    agreed = 0
    for k, (e, ok) in enumerate(zip(ent_c, agree_c), start=1):
        agreed += int(ok)
        # Only cut between distinct entropies: every answer at or below e is accepted.
        if k < len(ent_c) and ent_c[k] == e:
            continue
        if agreed / k >= target:
            best = Calibration(float(min(e, 1.0)), k / len(ent), agreed / k, len(ent))
    return best
