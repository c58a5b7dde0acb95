"""The benchmark's workload: a task's test split as model input, and a query stream over it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from knowcache import tasks
from knowcache.bench.streams import DEFAULT_REPEAT, QueryStream, StreamConfig, build
from knowcache.data import store
from knowcache.data.dataset import model_input

QUERIES = {True: 300, False: 1000}   # --quick, full


def load(task: str, *, quick: bool, queries: Optional[int] = None, zipf: float = 1.0,
         repeat: Optional[float] = None, seed: int = 0, speech_commands: Optional[Path] = None,
         fashion_mnist: Optional[Path] = None, cifar10: Optional[Path] = None,
         progress: Optional[Callable[[str, int, int], None]] = None
         ) -> tuple[QueryStream, np.ndarray, str]:
    """(stream, the test split as float32 model input, where the data came from)."""
    spec = tasks.VISION_CIFAR10 if (task == "vision" and cifar10) else tasks.get(task)
    data = store.test_split(task, seed=seed, quick=quick, speech_commands=speech_commands,
                            fashion_mnist=fashion_mnist, cifar10=cifar10, progress=progress)
    config = StreamConfig(queries=queries or QUERIES[quick], zipf=zipf,
                          repeat=DEFAULT_REPEAT[task] if repeat is None else repeat, seed=seed)
    stream = build(data.test.y, tuple(data.labels), spec.popularity, config)
    return stream, model_input(task, data.test.x), data.source
