"""The benchmark's workload: a task's test split as model input, and a query stream over it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from knowcache import tasks
from knowcache.bench.streams import DEFAULT_REPEAT, QueryStream, StreamConfig, build
from knowcache.data import folders, store
from knowcache.data.dataset import model_input

QUERIES = {True: 300, False: 1000}   # --quick, full


def load(task: str, *, quick: bool, queries: Optional[int] = None, zipf: float = 1.0,
         repeat: Optional[float] = None, seed: int = 0, speech_commands: Optional[Path] = None,
         fashion_mnist: Optional[Path] = None, cifar10: Optional[Path] = None,
         data: Optional[Path] = None, exclude_speakers: frozenset[str] = frozenset(),
         progress: Optional[Callable[[str, int, int], None]] = None
         ) -> tuple[QueryStream, np.ndarray, str]:
    """(stream, the test split as float32 model input, where the data came from).

    With ``data``, a folder of ``<label>/*.wav`` (or images), the stream is drawn
    from its files instead, leaving out speakers in ``exclude_speakers`` (those the
    models were fitted or calibrated on)."""
    spec = tasks.VISION_CIFAR10 if (task == "vision" and cifar10) else tasks.get(task)
    if repeat is None:
        repeat = DEFAULT_REPEAT[tasks.family(task)]
    config = StreamConfig(queries=queries or QUERIES[quick], zipf=zipf, repeat=repeat, seed=seed)
    if data is not None:
        y, x, source = _folder(task, spec, data, exclude_speakers)
        return build(y, spec.labels, spec.popularity, config), x, source
    split = store.test_split(task, seed=seed, quick=quick, speech_commands=speech_commands,
                             fashion_mnist=fashion_mnist, cifar10=cifar10, progress=progress)
    stream = build(split.test.y, tuple(split.labels), spec.popularity, config)
    return stream, model_input(task, split.test.x), split.source


def _folder(task: str, spec, root: Path, exclude: frozenset[str]
            ) -> tuple[np.ndarray, np.ndarray, str]:
    found = folders.load_task_folder(root, spec.labels,
                                     None if task == "kws" else spec.image_size)
    kept, dropped = folders.leave_out(found, exclude)
    if not len(kept):
        raise ValueError(f"every file in {root} is from a speaker the models were fitted or "
                         "calibrated on; nothing is left to measure")
    source = f"{root} ({len(kept)} files"
    if task == "kws":
        source += f", {len(set(kept.speaker.tolist()))} speakers"
    if len(dropped):
        source += f"; {len(dropped)} files of speakers the models were fitted or " \
                  "calibrated on left out"
    return kept.y.astype(np.int64), model_input(task, kept.x), source + ")"
