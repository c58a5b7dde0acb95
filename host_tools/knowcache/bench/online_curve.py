"""The online learner from cold start, request by request (`knowcache bench
--layer-cache`): how fast self-distilled exits reach the targets.

A copy of the task's models gets a cold staged program (untrained heads, no
thresholds). Each request is answered twice: by the *device*, an Engine
running the currently published staged version with the system's gate (the
figures), and by the *cloud*, the OnlineLearner that records it and retrains
every ``retrain_every`` requests, synchronously here so the run is
reproducible. When a retrain is swapped in, the device reloads the staged
program through the new manifest, as a device fetching it would. The whole
model's latency is measured on the same inputs for the savings.

Evaluation is prequential: every request is answered by a version trained
only on earlier requests.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from knowcache.layer_cache.online import OnlineConfig, learner_for
from knowcache.runtime import Engine


def run(task_dir: Path, x: np.ndarray, *, gate: str = "confidence", retrain_every: int = 250,
        window: int = 250, log: Callable[[str], None] = print,
        progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """``x``: the request stream (model inputs, in order)."""
    n = len(x)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / task_dir.name
        shutil.copytree(task_dir, work)
        log(f"online: cold staged program in a copy of {task_dir}; retraining every "
            f"{retrain_every} requests")
        learner = learner_for(work, OnlineConfig(retrain_every=retrain_every, verify_gate=gate),
                              cold=True, background=False, log=log)
        total = learner.entry["staged"]["total_flops"]
        device = Engine.from_models_dir(work, staged=True, exit_gate=gate)
        whole = Engine.from_models_dir(work, install=["full"], threshold=1.0)
        version = learner.version
        pred, ref, flops, exits = (np.zeros(n, np.int64) for _ in range(4))
        lat, lat_whole = np.zeros(n), np.zeros(n)
        versions = [(0, version)]
        for i in range(n):
            xi = x[i][None]
            t0 = time.perf_counter()
            r = device.infer(xi)
            lat[i] = time.perf_counter() - t0
            t0 = time.perf_counter()
            whole.infer(xi)
            lat_whole[i] = time.perf_counter() - t0
            pred[i], flops[i], exits[i] = r.index, r.flops, r.exit_index
            ref[i] = int(np.argmax(learner.answer(xi)))
            if learner.version != version:
                version = learner.version
                versions.append((i + 1, version))
                device = Engine.from_models_dir(work, staged=True, exit_gate=gate)
            if progress:
                progress(f"online ({gate})", i + 1, n)
        windows = []
        for start in range(0, n, window):
            sl = slice(start, min(n, start + window))
            windows.append({
                "requests": sl.stop,
                "fidelity": float(np.mean(pred[sl] == ref[sl])),
                "flops_saved": float(1.0 - flops[sl].mean() / total),
                "latency_saved": float(1.0 - lat[sl].mean() / lat_whole[sl].mean()),
                "exit_rate": float(np.mean(exits[sl] >= 0)),
            })
        reached = next((w["requests"] for w in windows
                        if w["flops_saved"] >= 0.5 and w["latency_saved"] >= 0.4
                        and 1.0 - w["fidelity"] < 0.005), None)
        return {"gate": gate, "requests": n, "retrain_every": retrain_every, "window": window,
                "windows": windows, "versions": versions,
                "retrains": [r.__dict__ for r in learner.reports],
                "rollbacks": sum(r.outcome == "rolled_back" for r in learner.reports),
                "targets_reached_by_request": reached}
