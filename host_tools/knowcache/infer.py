"""`knowcache infer`: files classified by the device runtime, one answer per file.

Each file goes through the one input contract (data/input_contract.py) and
then the two-stage engine built from a task's manifest, as on a device: the
cached model answers what its gate accepts; the rest goes to the cloud when one
is given, else comes back ``degraded`` (the local answer, flagged). A file the
contract refuses gets an answer with ``error`` set and the next file is read.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from knowcache import manifest as manifests
from knowcache.data import input_contract
from knowcache.data.input_contract import InputError, InputShape

SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass
class FileAnswer:
    """The answer for one file, or why it has none."""

    file: str
    task: Optional[str] = None
    label: Optional[str] = None
    confidence: Optional[float] = None
    source: Optional[str] = None         # local | cloud | degraded | private | local_only
    partition: Optional[str] = None      # the local program that ran
    ms: Optional[float] = None           # the engine's time (network included)
    degraded_reason: Optional[str] = None
    private: Optional[bool] = None       # a private class: the file never left the device
    kept_reason: Optional[str] = None    # private / local_only: why it was not uploaded
    notice: Optional[str] = None         # a conversion worth knowing (a long clip's window)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self, width: int = 0) -> str:
        """The text line `knowcache infer` prints for a file answered (file column ``width``)."""
        return (f"{self.file:<{width}}  {self.label:<12} {self.confidence:6.1%}  "
                f"{self.source:<8} {self.ms:7.1f} ms")


def default_models(task: str) -> Path:
    """``models/<task>`` of the working folder when it has one, else the shipped one."""
    here = Path("models") / task
    return here if manifests.exists(here) else SHIPPED_MODELS / task


def check_models_dir(models: Path, task: Optional[str] = None) -> None:
    """InputError saying which folder to pass when ``models`` holds no manifest."""
    if manifests.exists(models):
        return
    below = sorted(p.parent.name for p in Path(models).glob("*/manifest.json"))
    if below:
        pick = task if task in below else below[0]
        raise InputError(f"{models} holds the models of {', '.join(below)} one level down; "
                         f"pass --models {Path(models) / pick}")
    raise InputError(f"no manifest.json in {models}; pass --models with a task's models folder "
                     "(the shipped ones are models/kws and models/vision)")


class Classifier:
    """Engines per task, built on first use; ``classify`` answers one file.

    ``task`` and ``models`` pin one task's models; otherwise each file's task is
    told by its suffix and the shipped ``models/<task>`` is used."""

    def __init__(self, *, task: Optional[str] = None, models: Optional[Path] = None,
                 cloud: Optional[str] = None, token: Optional[str] = None,
                 model: str = "cached", ca_file: Optional[str] = None,
                 local_only: bool = False, private_share: float = 0.2):
        self.task, self.models, self.cloud, self.token, self.model = (task, models, cloud,
                                                                       token, model)
        self.routing = {"ca_file": ca_file, "local_only": local_only,
                        "private_share": private_share}
        self._engines: dict[str, tuple[object, InputShape]] = {}
        if models is not None:
            check_models_dir(models, task)
            found = manifests.load(models).task
            if task is not None and found != task:
                raise InputError(f"{models} holds {found} models, not {task}; pass --task "
                                 f"{found} or the {task} models folder")
            self.task = found

    def task_for(self, path: str | os.PathLike) -> str:
        return self.task or input_contract.task_of(path)

    def engine_for(self, task: str):
        """(engine, input shape) for ``task``; raises KnowcacheError / InputError."""
        if task not in self._engines:
            from knowcache.runtime import Engine
            models = self.models or default_models(task)
            check_models_dir(models, task)
            ids = [p["id"] for p in manifests.load(models).entries()]
            if self.model not in ids:
                raise InputError(f"{models} has no program {self.model!r}; pass --model with "
                                 f"one of: {', '.join(ids)}")
            engine = Engine.from_models_dir(models, install=[self.model], cloud_url=self.cloud,
                                            token=self.token, fetch_hints=False, **self.routing)
            info = engine.manifest.find(engine.active_id())
            self._engines[task] = (engine, InputShape.of(info.input))
        return self._engines[task]

    def classify(self, path: str | os.PathLike) -> FileAnswer:
        from knowcache.runtime import KnowcacheError
        answer = FileAnswer(file=str(path))
        try:
            input_contract.check_file(path)
            answer.task = self.task_for(path)
            engine, spec = self.engine_for(answer.task)
            prepared = input_contract.prepare(path, spec)
            input_contract.check_finite(prepared.x, str(path))
            r = engine.infer(prepared.x)
        except (InputError, KnowcacheError, LookupError, ValueError) as e:
            message = str(e)
            answer.error = message if message.startswith(str(path)) else f"{path}: {message}"
            return answer
        answer.label, answer.confidence, answer.source = r.label, float(r.confidence), r.source
        answer.partition, answer.ms = r.partition_id, r.total_us / 1e3
        answer.degraded_reason = r.degraded_reason or None
        answer.private = True if r.is_private else None
        answer.kept_reason = r.kept_reason or None
        answer.notice = prepared.notice
        return answer

    def classify_all(self, paths: Iterable[str | os.PathLike]) -> Iterator[FileAnswer]:
        for p in paths:
            yield self.classify(p)
