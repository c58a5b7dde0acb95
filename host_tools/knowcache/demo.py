"""`knowcache demo` before the benchmark lands: the runtime end to end on a small model.

A toy 10-class image task (oriented gratings in noise, generated here, so the
demo needs no data set) gives a small full model and a specialized cached
model for the 3 most popular classes plus "other". Both are lowered to
ExecuTorch programs with a manifest; the C++ runtime loads the cached one into
a slot and answers a Zipf-distributed query stream, gating by entropy. With
no cloud tier yet (it arrives with `knowcache serve`), rejected queries are
returned as degraded local answers and counted as what would go to the cloud.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from knowcache import export, runtime
from knowcache.calibration import calibrate_threshold

LABELS = [f"grating{k * 18}" for k in range(10)]
CACHED = LABELS[:3]
OTHER = "other"
IMAGE_SHAPE = (1, 3, 32, 32)


def gratings(n: int, seed: int, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n images of oriented sinusoidal gratings in noise; class k is angle 18k degrees."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n) if classes is None else classes
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 32.0
    theta = np.deg2rad(18.0 * y + rng.normal(0, 4, n))[:, None, None]
    freq = rng.uniform(3, 5, n)[:, None, None]
    phase = rng.uniform(0, 2 * math.pi, n)[:, None, None]
    g = np.sin(2 * math.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    x = g[:, None] * rng.uniform(0.5, 1.0, (n, 3, 1, 1)) + rng.normal(0, 0.4, (n, 3, 32, 32))
    return x.astype(np.float32), y.astype(np.int64)


def cnn(width: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> nn.Module:
    """Adam with class-balanced cross entropy ("other" dominates a cached model's data)."""
    torch.manual_seed(seed)
    counts = np.bincount(y).astype(np.float32)
    weight = torch.from_numpy(counts.sum() / (len(counts) * np.maximum(counts, 1)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx], weight=weight).backward()
            opt.step()
    return model.eval()


@dataclass
class DemoReport:
    models_dir: Path
    full_bytes: int
    cached_bytes: int
    queries: int
    local_rate: float
    local_accuracy: float
    full_accuracy: float
    p50_us: float
    p99_us: float


def build_models(out: Path, quick: bool, log=print) -> Path:
    """Trains and exports the toy full and cached models; returns the models directory."""
    models = out / "models" / "toy"
    n = 1500 if quick else 6000
    epochs = 4 if quick else 8
    x, y = gratings(n, seed=1)
    log(f"training the full model on {n} toy images ({epochs} epochs)...")
    full = train(cnn(24, 10), x, y, epochs, seed=0)
    # The cached model: popular classes kept, everything else folded into "other".
    yc = np.where(y < len(CACHED), y, len(CACHED))
    log("training the cached model (3 popular classes + other)...")
    cached = train(cnn(12, len(CACHED) + 1), x, yc, epochs, seed=0)
    # Threshold: the largest at which accepted answers agree with the full
    # model 99% of the time on held-out images.
    xh, _ = gratings(n // 3, seed=2)
    with torch.no_grad():
        full_pred = full(torch.from_numpy(xh)).argmax(1).numpy()
        cached_logits = cached(torch.from_numpy(xh)).numpy()
    reference = np.where(full_pred < len(CACHED), full_pred, len(CACHED))
    cal = calibrate_threshold(cached_logits, reference, other_index=len(CACHED))
    log(f"calibrated threshold {cal.threshold:.3f}: accepts {cal.accept_rate:.1%} of held-out "
        f"images, {cal.agreement:.1%} agree with the full model")

    example = (torch.zeros(IMAGE_SHAPE),)
    entries = []
    for pid, model, role, labels, other, threshold in (
            ("full", full, "full", LABELS, None, 1.0),
            ("cached", cached, "cached", CACHED + [OTHER], OTHER, cal.threshold)):
        pte = export.lower_to_pte(model, example)
        name = export.save_program(models, pid, pte)
        entries.append(export.partition_entry(
            pid, pte, role=role, labels=labels, file=name, input_shape=IMAGE_SHAPE,
            threshold=threshold, other_label=other, image_size=IMAGE_SHAPE[1:]))
    export.write_manifest(models, "toy", LABELS, entries)
    return models


def zipf_stream(n: int, seed: int, exponent: float = 1.0) -> np.ndarray:
    ranks = np.arange(1, 11, dtype=np.float64)
    p = ranks ** -exponent
    return np.random.default_rng(seed).choice(10, size=n, p=p / p.sum())


def run(out: Path, quick: bool = True, log=print) -> DemoReport:
    models = build_models(out, quick, log)
    manifest = runtime.Manifest.load(str(models / "manifest.json"))
    engine = runtime.Engine("toy", manifest=manifest, slots=1)
    engine.install_from_manifest("cached", pinned=True)
    full = runtime.Partition.from_file(str(models / "full.pte"), manifest.find("full"))

    queries = 300 if quick else 2000
    x, y = gratings(queries, seed=7, classes=zipf_stream(queries, seed=3))
    local_hits = local_correct = full_correct = 0
    latencies = []
    for xi, yi in zip(x, y):
        t0 = time.perf_counter()
        r = engine.infer(xi[None])
        latencies.append((time.perf_counter() - t0) * 1e6)
        full_correct += int(np.argmax(full.run(xi[None])) == yi)
        if r.source == "local":
            local_hits += 1
            local_correct += int(r.index == yi)
    return DemoReport(
        models_dir=models,
        full_bytes=manifest.find("full").bytes,
        cached_bytes=manifest.find("cached").bytes,
        queries=queries,
        local_rate=local_hits / queries,
        local_accuracy=local_correct / max(local_hits, 1),
        full_accuracy=full_correct / queries,
        p50_us=float(np.percentile(latencies, 50)),
        p99_us=float(np.percentile(latencies, 99)),
    )
