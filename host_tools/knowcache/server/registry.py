"""What the server serves per task: the manifest, the full model (an ExecuTorch
program run by the knowcache runtime), the partition selector the manifest
names, and the partition files with their sha256 (the ETag)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import softmax

from knowcache import manifest as manifests
from knowcache.manifest import Role
from knowcache.runtime import Manifest, Partition
from knowcache.server import selector as selectors
from knowcache.server.selector import PartitionSelector

if TYPE_CHECKING:
    from knowcache.layer_cache.online import OnlineLearner

DTYPES = {"float32": np.float32, "uint8": np.uint8, "int8": np.int8, "int32": np.int32,
          "int64": np.int64}


@dataclass
class Answer:
    index: int
    label: str
    confidence: float
    partition_hint: str | None


@dataclass
class TaskModels:
    name: str
    manifest: Manifest
    manifest_text: str
    full: Partition
    dtype: str
    shape: list[int]
    partition_ids: list[str]
    selector: PartitionSelector | None
    files: dict[str, Path] = field(default_factory=dict)
    learner: "OnlineLearner | None" = None     # layer caching learned online (--learn-exits)

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def input_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype]).itemsize

    def run(self, x: np.ndarray) -> Answer:
        """The full model's answer and the partition the device should cache."""
        logits = self.learner.answer(x) if self.learner else self.full.run(x)
        p = softmax(logits.reshape(-1).astype(np.float64))
        index = int(p.argmax())
        hint = None
        if self.selector is not None:
            hint = self.partition_ids[int(self.selector.select(p)[0])]
        return Answer(index, self.manifest.labels[index], float(p[index]), hint)


def refresh_manifest(task: TaskModels, directory: Path) -> None:
    """Re-reads the manifest after a new staged version was swapped in."""
    current = manifests.load(directory)
    task.files = {p.id: directory / p.file for p in current.parsed.partitions}
    task.manifest, task.manifest_text = current.parsed, current.text


def attach_learner(task: TaskModels, directory: Path, retrain_every: int, log=print) -> None:
    from knowcache.layer_cache.online import OnlineConfig, learner_for
    task.learner = learner_for(directory, OnlineConfig(retrain_every=retrain_every),
                               on_swap=lambda _e, _v: refresh_manifest(task, directory), log=log)


def load_task(directory: Path) -> TaskModels:
    current = manifests.load(directory)
    manifest = current.parsed
    full_ids = manifest.ids_with_role(Role.FULL)
    if not full_ids:
        raise ValueError(f"{current.path}: no partition with role 'full' for the cloud to run")
    info = manifest.find(full_ids[0])
    full = Partition.from_file(str(directory / info.file), info)
    partition_ids, selector = selectors.from_manifest(current)
    return TaskModels(
        name=manifest.task, manifest=manifest, manifest_text=current.text, full=full,
        dtype=info.input.dtype, shape=list(info.input.shape),
        partition_ids=partition_ids, selector=selector,
        files={p.id: directory / p.file for p in manifest.partitions})


def load_all(models: Path, learn_exits: bool = False, retrain_every: int = 250,
             log=print) -> dict[str, TaskModels]:
    """Every task folder (one holding manifest.json) under ``models``."""
    if not models.is_dir():
        raise FileNotFoundError(f"{models} is not a folder of task models (models/<task>/)")
    tasks = {}
    for manifest in sorted(models.glob("*/manifest.json")):
        t = load_task(manifest.parent)
        if t.name in tasks:
            raise ValueError(f"task {t.name!r} appears twice under {models}")
        tasks[t.name] = t
        if learn_exits and t.manifest.ids_with_role(Role.STAGED):
            attach_learner(t, manifest.parent, retrain_every, log)
    if not tasks:
        raise FileNotFoundError(f"no <task>/manifest.json under {models}")
    return tasks


def task_names(models: Path) -> list[str]:
    """Task names under ``models`` by folder, without loading anything (for docs)."""
    return sorted(p.parent.name for p in Path(models).glob("*/manifest.json"))


def warm_up(task: TaskModels, runs: int = 3) -> float:
    """Runs the full model a few times (not recorded by a layer-cache learner); returns the
    last run's milliseconds."""
    x = np.zeros(task.shape, DTYPES[task.dtype])
    ms = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        task.full.run(x)
        ms = (time.perf_counter() - t0) * 1e3
    return ms
