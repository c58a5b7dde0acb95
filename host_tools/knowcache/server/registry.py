"""What the server serves per task: the manifest, the full model (an ExecuTorch
program run by the knowcache runtime), the partition selector the manifest
names, and the partition files with their sha256 (the ETag).

Every partition's bytes are read and hashed at load: a file whose size or
sha256 disagrees with its manifest entry is refused (logged, not served), so
the ETag is always the sha256 of the bytes served. A task that cannot load is
refused and logged; the others are served."""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from scipy.special import softmax

from knowcache import manifest as manifests
from knowcache import tta
from knowcache.manifest import Role
from knowcache.runtime import InputSpec, Manifest, Partition, PartitionInfo, StagedModel
from knowcache.server import selector as selectors
from knowcache.server.selector import PartitionSelector
from knowcache.server.split import LazyResume

if TYPE_CHECKING:
    from knowcache.layer_cache.online import OnlineConfig, OnlineLearner

DTYPES = {"float32": np.float32, "uint8": np.uint8, "int8": np.int8, "int32": np.int32,
          "int64": np.int64}


@dataclass
class Answer:
    index: int
    label: str
    confidence: float
    partition_hint: str | None


@dataclass(frozen=True)
class PartitionBytes:
    """A partition file as read and verified at load: what is served, and its ETag."""

    data: bytes
    sha256: str


def read_partitions(directory: Path, manifest: Manifest
                    ) -> tuple[dict[str, PartitionBytes], dict[str, str]]:
    """(verified partitions by id, refused ones by id with the reason)."""
    ok, refused = {}, {}
    for info in manifest.partitions:
        path = directory / info.file
        try:
            data = path.read_bytes()
        except OSError as e:
            refused[info.id] = f"{path}: cannot be read ({e.strerror})"
            continue
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != info.bytes or digest != info.sha256:
            refused[info.id] = (f"{path} is {len(data)} bytes with sha256 {digest[:12]}..., but "
                                f"the manifest says {info.bytes} bytes, {info.sha256[:12]}...; "
                                "rebuild or re-copy the models")
            continue
        ok[info.id] = PartitionBytes(data, digest)
    return ok, refused


@dataclass(frozen=True)
class ServedManifest:
    """The manifest's exact text and its detached signature (``manifest.sig``'s line,
    None when unsigned), replaced together so a reader never pairs one version's
    text with another's signature."""

    text: str
    signature: Optional[str] = None


@dataclass
class TaskModels:
    name: str
    manifest: Manifest
    served_manifest: ServedManifest
    full: Optional[Partition]      # None where the model runs elsewhere (a Ray ingress)
    input: InputSpec               # the full model's: ``check`` refuses what the engine would
    partition_ids: list[str]
    selector: PartitionSelector | None
    files: dict[str, "PartitionBytes"] = field(default_factory=dict)   # the verified ones
    refused_files: dict[str, str] = field(default_factory=dict)        # id -> why
    learner: "OnlineLearner | None" = None     # layer caching learned online (--learn-exits)
    not_learning: str = ""         # --learn-exits, yet no learner could start: why
    cloud_tta: str = "none"        # test-time views of the full model's answers (knowcache/tta.py)
    staged: LazyResume = field(default_factory=lambda: LazyResume(None, None))  # split uploads

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def dtype(self) -> str:
        return self.input.dtype

    @property
    def shape(self) -> list[int]:
        return list(self.input.shape)

    @property
    def input_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype]).itemsize

    def run(self, x: np.ndarray) -> Answer:
        """The full model's answer (over the manifest's test-time views; a learner's
        staged program sees one view) and the partition the device should cache."""
        if self.learner:
            return self.answer(self.learner.answer(x))
        return self.answer(tta.run(self.full.run, x, self.cloud_tta))

    def resume(self, from_stage: int, x: np.ndarray) -> Answer:
        """Split computing: the full model's answer from the staged program's activation
        at ``from_stage`` (checked against the program by server/split.py first)."""
        return self.answer(self.staged.get().resume(from_stage, x))

    def answer(self, logits: np.ndarray) -> Answer:
        """The answer of the full model's ``logits`` and the partition to cache."""
        p = softmax(logits.reshape(-1).astype(np.float64))
        index = int(p.argmax())
        hint = None
        if self.selector is not None:
            hint = self.partition_ids[int(self.selector.select(p)[0])]
        return Answer(index, self.manifest.labels[index], float(p[index]), hint)


def refresh_manifest(task: TaskModels, directory: Path) -> None:
    """Re-reads the manifest after a new staged version was swapped in."""
    current = manifests.load(directory)
    _replace(task, current, *read_partitions(directory, current.parsed))


def _replace(task: TaskModels, current: manifests.ManifestFile,
             files: dict[str, PartitionBytes], refused: dict[str, str]) -> None:
    """Serves ``current`` (a new version of the same task's manifest) and its files."""
    task.files, task.refused_files = files, refused
    task.cloud_tta = current.cloud_tta
    task.manifest, task.served_manifest = current.parsed, ServedManifest(current.text,
                                                                         current.signature)
    task.staged.replace(*_staged_program(current.directory, current.parsed, files))


def _staged_program(directory: Path, manifest: Manifest, files: dict[str, PartitionBytes]
                    ) -> tuple[Path | None, PartitionInfo | None]:
    """The verified staged program split uploads resume with, or (None, None)."""
    for pid in manifest.ids_with_role(Role.STAGED):
        if pid in files:
            info = manifest.find(pid)
            return directory / info.file, info
    return None, None


def learn_or_warn(task: TaskModels, directory: Path, online: "OnlineConfig | None" = None,
                  log=print, warn=print, then: Callable[[], None] = lambda: None) -> None:
    """Answers ``task`` with its staged program and learns the exits from its traffic
    (``online``: the learner's settings, None for the defaults); ``then`` is called
    after ``task`` serves a newly published version. A learner that cannot start
    (e.g. a full program this knowcache cannot read back into PyTorch) leaves the
    task served as it is, without learning: warned, and the reason kept in
    ``task.not_learning``."""
    from knowcache.layer_cache.online import OnlineConfig, learner_for

    def swapped(_entry: dict, _version: int) -> None:
        refresh_manifest(task, directory)
        then()
    try:
        task.learner = learner_for(directory, online or OnlineConfig(), on_swap=swapped,
                                   log=log)
    except Exception as e:  # noqa: BLE001 - learning is an extra: it never stops serving
        task.not_learning = f"{type(e).__name__}: {e}"
        warn(f"task {task.name!r} is served without learning its exits: {task.not_learning}")


def load_task(directory: Path) -> TaskModels:
    current = manifests.load(directory)
    files, refused = read_partitions(directory, current.parsed)
    return assemble(current, files, refused)


def assemble(current: manifests.ManifestFile, files: dict[str, PartitionBytes],
             refused: dict[str, str], *, load_full: bool = True) -> TaskModels:
    """A task from its manifest and its verified partition bytes; ``load_full=False``
    leaves the full model unloaded (a Ray ingress, whose model runs in a deployment)."""
    manifest = current.parsed
    full_ids = manifest.ids_with_role(Role.FULL)
    if not full_ids:
        raise ValueError(f"{current.path}: no partition with role 'full' for the cloud to run")
    info = manifest.find(full_ids[0])
    if info.id in refused:
        raise ValueError(f"its full model is refused: {refused[info.id]}")
    if current.cloud_tta != "none" and len(info.input.shape) != 4:
        raise ValueError(f"{current.path}: cloud_tta {current.cloud_tta!r} is for image "
                         f"programs [1, C, H, W], but the full model takes "
                         f"{list(info.input.shape)}; remove cloud_tta")
    full = Partition.from_bytes(files[info.id].data, info) if load_full else None
    partition_ids, selector = selectors.from_manifest(current)
    return TaskModels(
        name=manifest.task, manifest=manifest,
        served_manifest=ServedManifest(current.text, current.signature), full=full,
        input=info.input, partition_ids=partition_ids, selector=selector, files=files,
        refused_files=refused, cloud_tta=current.cloud_tta,
        staged=LazyResume(*_staged_program(current.directory, manifest, files)))


@dataclass(frozen=True)
class TaskBytes:
    """A loaded task as text and bytes (the manifest and the partitions verified at
    load): what a process on another machine rebuilds it from, without its folder."""

    directory: str
    manifest: ServedManifest
    files: dict[str, PartitionBytes]
    refused_files: dict[str, str]

    @classmethod
    def of(cls, task: TaskModels, directory: Path) -> "TaskBytes":
        return cls(str(directory), task.served_manifest, task.files, task.refused_files)

    def _current(self) -> manifests.ManifestFile:
        return manifests.from_text(Path(self.directory), self.manifest.text,
                                   self.manifest.signature)

    def load(self, *, load_full: bool = True) -> TaskModels:
        return assemble(self._current(), self.files, self.refused_files, load_full=load_full)

    def refresh(self, task: TaskModels) -> None:
        """Makes ``task`` (loaded from an older version of these bytes) serve these."""
        _replace(task, self._current(), self.files, self.refused_files)

    def staged_model(self) -> StagedModel:
        """The runtime's model of the staged program (the runtime loads programs from
        files: its verified bytes go through a temporary one)."""
        manifest = self._current().parsed
        path, info = _staged_program(Path(self.directory), manifest, self.files)
        if info is None:
            raise ValueError(f"task {manifest.task!r} serves no staged program; export one "
                             "with `knowcache export --staged`")
        with tempfile.NamedTemporaryFile(suffix=".pte") as f:
            f.write(self.files[info.id].data)
            f.flush()
            return StagedModel.from_file(f.name, info)


@dataclass
class LoadReport:
    """What ``load_all`` found: the tasks it loaded and the folders it refused."""

    tasks: dict[str, TaskModels] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)     # folder -> why
    directories: dict[str, Path] = field(default_factory=dict)  # task -> its folder

    def summary(self) -> str:
        """One sentence for when no task loaded, saying what to fix."""
        if self.refused:
            return "no task loaded: " + "; ".join(f"{d}: {why}" for d, why in self.refused.items())
        return "no task loaded"


def load_all(models: Path, learn_exits: bool = False, online: "OnlineConfig | None" = None,
             log=print, warn=print) -> LoadReport:
    """Every task folder (one holding manifest.json) under ``models``; a task that
    fails to load is refused and logged, the others are loaded. With
    ``learn_exits``, a task with a staged program learns its exits online with
    the settings ``online`` (None: the defaults)."""
    models = Path(models)
    report = LoadReport()
    found = sorted(models.glob("*/manifest.json")) if models.is_dir() else []
    if not models.is_dir():
        report.refused[str(models)] = "not a folder; pass the folder of <task>/manifest.json"
    elif manifests.exists(models):
        report.refused[str(models)] = (f"is one task's folder; pass its parent "
                                       f"(--models {models.parent}), which holds <task>/"
                                       "manifest.json for every task")
    elif not found:
        report.refused[str(models)] = ("no <task>/manifest.json in it; pass the "
                                       "folder holding kws/ and vision/ (the shipped one is "
                                       "models/)")
    for path in found:
        directory = path.parent
        try:
            t = load_task(directory)
            if t.name in report.tasks:
                raise ValueError(f"task {t.name!r} appears twice under {models}")
            if learn_exits and t.manifest.ids_with_role(Role.STAGED):
                learn_or_warn(t, directory, online, log, warn)
        except Exception as e:  # noqa: BLE001 - any failure refuses this task, not the server
            report.refused[str(directory)] = f"{type(e).__name__}: {e}"
            warn(f"refused task folder {directory}: {type(e).__name__}: {e}")
            continue
        report.tasks[t.name] = t
        report.directories[t.name] = directory
        log(f"loaded task {t.name!r} from {directory}: {len(t.files)} programs verified by "
            "sha256" + (f", {len(t.refused_files)} refused" if t.refused_files else ""))
        for pid, why in t.refused_files.items():
            warn(f"refused partition {t.name}/{pid} (not served): {why}")
    if not report.tasks:
        warn(report.summary())
    return report


def task_names(models: Path) -> list[str]:
    """Task names under ``models`` by folder, without loading anything (for docs)."""
    return sorted(p.parent.name for p in Path(models).glob("*/manifest.json"))


def input_dtypes(models: Path, report: Optional[LoadReport] = None) -> list[str]:
    """The element types the tasks under ``models`` take (for docs: the OpenAPI enum
    lists what the server accepts, not every type the protocol could carry); those of
    ``report``'s tasks where this machine has no models folder (a Ray ingress)."""
    found = set()
    for path in Path(models).glob("*/manifest.json"):
        try:
            found.update(p.input.dtype for p in manifests.load(path.parent).parsed.partitions)
        except (ValueError, OSError, RuntimeError):
            continue      # refused at load, with the reason logged there
    if not found and report is not None:
        found.update(p.input.dtype for t in report.tasks.values() for p in t.manifest.partitions)
    return sorted(found) or sorted(DTYPES)


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
