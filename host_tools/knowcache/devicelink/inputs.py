"""A file as the input tensor of a task, the way knowcache-device reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from knowcache import tasks
from knowcache.data import audio


def read_input(task: str, path: Path) -> np.ndarray:
    """kws: a 16 kHz mono WAV (padded or cut to 1 s); vision: raw uint8 or float32 pixels."""
    spec = tasks.get(task)
    shape = spec.input_shape
    n = int(np.prod(shape))
    if task == "kws":
        x, rate = audio.read_wav(path)
        if rate != spec.sample_rate:
            raise ValueError(f"{path}: {rate} Hz; expected {spec.sample_rate} Hz mono")
        out = np.zeros(n, np.float32)
        out[: min(n, len(x))] = x[:n]
        return out.reshape(shape)
    data = Path(path).read_bytes()
    if len(data) == n:
        return (np.frombuffer(data, np.uint8).astype(np.float32) / 255).reshape(shape)
    if len(data) == 4 * n:
        return np.frombuffer(data, "<f4").reshape(shape).copy()
    raise ValueError(f"{path}: {len(data)} bytes; the model takes {n} uint8 pixels or {4 * n} "
                     "bytes of float32")
