"""Accuracy against local rate as the entropy gate's threshold sweeps.

For a gated device model (the specialized cache, or the generic student used
the same way) every query's local answer and normalized entropy come from the
program itself through the C++ runtime and gate; a rejected query gets the
full model's answer as the cloud returns it (over the manifest's test-time
views, when it has any). So each threshold's accuracy
and local rate are exact for the stream, without rerunning the link.
"""

from __future__ import annotations

import numpy as np

from knowcache import tta
from knowcache.manifest import Role
from knowcache.runtime import Manifest, Partition, gate_evaluate

THRESHOLDS = np.round(np.linspace(0.0, 1.0, 51), 4)


def _partition(manifest: Manifest, pid: str) -> Partition:
    info = manifest.find(pid)
    if info is None:
        raise ValueError(f"{manifest.directory}/manifest.json has no program '{pid}'")
    return Partition.from_file(manifest.path_of(info), info)


def _id_of_role(manifest: Manifest, role: Role) -> str | None:
    return next(iter(manifest.ids_with_role(role)), None)


def predictions(manifest: Manifest, role: Role, x: np.ndarray, views: str = "none") -> np.ndarray:
    """Task class index each query gets from the model with this role, averaged over
    test-time ``views`` (knowcache/tta.py) as the cloud does for its full model."""
    pid = _id_of_role(manifest, role)
    if pid is None:
        raise ValueError(f"{manifest.directory}/manifest.json has no '{role}' program")
    part = _partition(manifest, pid)
    return tta.run_rows(part.run, x, views)[0].argmax(1)


def local_answers(manifest: Manifest, pid: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(task index or -1 for 'other', normalized entropy) per query."""
    part = _partition(manifest, pid)
    info = part.info
    task_index = [manifest.labels.index(l) if l in manifest.labels else -1 for l in info.labels]
    pred, entropy = np.full(len(x), -1), np.ones(len(x), np.float32)
    for i, row in enumerate(x):
        d = gate_evaluate(part.run(row[None]).reshape(-1), 1.0, info.other_index)
        pred[i] = -1 if d.is_other else task_index[d.index]
        entropy[i] = d.entropy
    return pred, entropy


def curve(pred: np.ndarray, entropy: np.ndarray, y: np.ndarray, reference: np.ndarray,
          threshold: float) -> dict:
    def point(t: float) -> tuple[float, float]:
        accept = (pred >= 0) & (entropy <= t)
        answer = np.where(accept, pred, reference)
        return float(np.mean(answer == y)), float(np.mean(accept))
    acc, rate = zip(*(point(t) for t in THRESHOLDS))
    cal_acc, cal_rate = point(threshold)
    return {"thresholds": THRESHOLDS.tolist(), "accuracy": list(acc), "local_rate": list(rate),
            "calibrated": {"threshold": float(threshold), "accuracy": cal_acc,
                           "local_rate": cal_rate}}


def gate_sweeps(manifest: Manifest, x: np.ndarray, y: np.ndarray, reference: np.ndarray) -> dict:
    """Sweeps for the cached (knowledge-caching) and generic students, full-model fallback."""
    out = {}
    for role in (Role.CACHED, Role.GENERIC):
        pid = _id_of_role(manifest, role)
        if pid is None:
            continue
        pred, entropy = local_answers(manifest, pid, x)
        out[str(role)] = curve(pred, entropy, y, reference, manifest.find(pid).threshold)
    return out
