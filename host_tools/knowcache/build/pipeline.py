"""The model build, stage by stage: full model -> cached + generic students ->
CacheNet partitions (training, any device) -> int8 export, calibration and
model card (`knowcache.build.publish`, CPU with ExecuTorch).

Every stage reads and writes a work folder of ``ModelRecord`` files, so the
stages can run on different machines (train on a GPU, export on the host)
and `knowcache build-models` simply runs them in order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from knowcache.build import partitioning, specialize, training
from knowcache.data import Dataset, store
from knowcache.models import FULL_CONFIGS, STUDENT_WIDTH, ModelRecord, build_net
from knowcache.models.nets import QUICK_FULL_WIDTH
from knowcache.tasks import KWS, VISION, VISION_CIFAR10, TaskSpec

PLAN = "plan.json"


@dataclass
class BuildConfig:
    task: str
    work: Path
    quick: bool = False
    device: str = "auto"
    seed: int = 0
    k: Optional[int] = None                    # CacheNet partitions (task default if None)
    classes: tuple[str, ...] = ()             # cached classes (popularity profile if empty)
    private: tuple[str, ...] = ()             # classes that must be cached
    full_epochs: Optional[int] = None
    student_epochs: Optional[int] = None
    speech_commands: Optional[Path] = None
    fashion_mnist: Optional[Path] = None
    cifar10: Optional[Path] = None
    extra: dict = field(default_factory=dict)

    def spec(self) -> TaskSpec:
        if self.task == "kws":
            return KWS
        if self.task == "vision":
            return VISION_CIFAR10 if self.cifar10 else VISION
        raise ValueError(f"unknown task {self.task!r}; choose kws or vision")

    def epochs(self, which: str) -> int:
        given = self.full_epochs if which == "full" else self.student_epochs
        if given is not None:
            if given < 1:
                raise ValueError("epochs must be at least 1")
            return given
        if self.quick:
            return 3
        return {("kws", "full"): 40, ("kws", "student"): 30, ("vision", "full"): 30,
                ("vision", "student"): 20}[(self.task, which)]

    def full_config(self):
        cfg = FULL_CONFIGS[self.task]
        if self.task == "vision":
            cfg = replace(cfg, in_channels=self.spec().image_size[0])
        return cfg.scaled(QUICK_FULL_WIDTH) if self.quick else cfg

    def student_config(self):
        return self.full_config().scaled(STUDENT_WIDTH[self.task])

    def fit(self, which: str) -> training.FitConfig:
        return training.FitConfig(epochs=self.epochs(which), seed=self.seed,
                                  batch=64 if self.quick else 256)


def load_data(cfg: BuildConfig, log: training.Log = print, progress=None) -> Dataset:
    data = store.for_task(cfg.task, seed=cfg.seed, quick=cfg.quick,
                          speech_commands=cfg.speech_commands, fashion_mnist=cfg.fashion_mnist,
                          cifar10=cfg.cifar10, progress=progress)
    log(data.summary())
    if tuple(data.labels) != cfg.spec().labels:
        raise ValueError(f"data set labels {data.labels} do not match task {cfg.task}")
    return data


def _plan(cfg: BuildConfig) -> dict:
    path = cfg.work / PLAN
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_plan(cfg: BuildConfig, plan: dict) -> None:
    cfg.work.mkdir(parents=True, exist_ok=True)
    (cfg.work / PLAN).write_text(json.dumps(plan, indent=2) + "\n")


def train_full(cfg: BuildConfig, data: Dataset, log: training.Log = print) -> ModelRecord:
    device = training.pick_device(cfg.device)
    x = training.as_float(cfg.task, data.train.x)
    y = torch.from_numpy(data.train.y.astype(np.int64))
    config = cfg.full_config()
    if cfg.task == "kws":
        norm = training.feature_stats(build_net("kws", config, 1), x)
    else:
        norm = (float(x.mean()), float(x.std()))
    model = build_net(cfg.task, config, len(data.labels), norm)
    log(f"full model: {sum(p.numel() for p in model.parameters()):,} parameters on {device}")
    model = training.fit(model, cfg.task, x, y, cfg.fit("full"), device, log=log, name="full")
    val = training.predict(model, training.as_float(cfg.task, data.val.x), device).argmax(1)
    acc = float((val == data.val.y).mean())
    log(f"full model: validation accuracy {acc:.4f}")
    record = ModelRecord(task=cfg.task, role="full", name="full", labels=list(data.labels),
                         config=config, norm=norm, state_dict=model.state_dict(),
                         metrics={"val_accuracy": acc})
    record.save(cfg.work / "full.pt")
    plan = _plan(cfg)
    plan.update({"task": cfg.task, "labels": list(data.labels), "source": data.source,
                 "quick": cfg.quick, "seed": cfg.seed, "full": "full.pt",
                 "trained_on": describe_device(device)})
    _save_plan(cfg, plan)
    return record


def _full(cfg: BuildConfig) -> ModelRecord:
    path = cfg.work / "full.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no full model in {cfg.work}; run `knowcache train --task "
                                f"{cfg.task}` first (or `knowcache build-models`)")
    return ModelRecord.load(path)


def run_specialize(cfg: BuildConfig, data: Dataset, log: training.Log = print) -> dict:
    """Knowledge caching: the cached student (+ other) and the generic student."""
    spec, full = cfg.spec(), _full(cfg)
    device = training.pick_device(cfg.device)
    cached = spec.cached_classes(cfg.classes or None, cfg.private)
    owned = specialize.owned_indices(data.labels, cached)
    x = training.as_float(cfg.task, data.train.x)
    y = torch.from_numpy(data.train.y.astype(np.int64))
    student = cfg.student_config()
    log(f"cached classes ({len(cached)}): {', '.join(cached)}")
    rec = specialize.distil(full, "cached", "cached", owned, student, x, y, cfg.fit("student"),
                            device, log)
    rec.save(cfg.work / "cached.pt")
    gen = specialize.distil(full, "generic", "generic", None, student, x, y, cfg.fit("student"),
                            device, log)
    gen.save(cfg.work / "generic.pt")
    plan = _plan(cfg)
    plan.update({"cached": "cached.pt", "cached_classes": list(cached), "generic": "generic.pt",
                 "private": list(cfg.private)})
    _save_plan(cfg, plan)
    return plan


def run_partition(cfg: BuildConfig, data: Dataset, log: training.Log = print) -> dict:
    """CacheNet: K partitions grouped by the full model's confusions, one student each."""
    spec, full = cfg.spec(), _full(cfg)
    k = cfg.k or spec.partitions
    device = training.pick_device(cfg.device)
    probs = torch.softmax(torch.from_numpy(training.predict(
        full.build(), training.as_float(cfg.task, data.val.x), device)), 1).numpy()
    confusion = partitioning.soft_confusion(probs, data.val.y, len(data.labels))
    groups = partitioning.group_classes(confusion, k)
    inside = partitioning.within_group_confusion(confusion, groups)
    log(f"{k} partitions keep {inside:.1%} of the full model's confusions inside a partition")
    x = training.as_float(cfg.task, data.train.x)
    y = torch.from_numpy(data.train.y.astype(np.int64))
    files = []
    for i, g in enumerate(groups):
        log(f"partition p{i}: {', '.join(data.labels[c] for c in g)}")
        rec = specialize.distil(full, "partition", f"p{i}", g, cfg.student_config(), x, y,
                                cfg.fit("student"), device, log)
        files.append(rec.save(cfg.work / f"p{i}.pt").name)
    plan = _plan(cfg)
    plan.update({"partitions": files, "groups": [[data.labels[c] for c in g] for g in groups],
                 "confusion_inside": inside})
    _save_plan(cfg, plan)
    return plan


def train_all(cfg: BuildConfig, log: training.Log = print, progress=None) -> dict:
    data = load_data(cfg, log, progress)
    train_full(cfg, data, log)
    run_specialize(cfg, data, log)
    return run_partition(cfg, data, log)


def describe_device(device: torch.device) -> str:
    """e.g. "cuda (NVIDIA H100 80GB HBM3), torch 2.11.0" or "cpu (2 threads), torch 2.13.0"."""
    if device.type == "cuda":
        what = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        what = f"cpu ({torch.get_num_threads()} threads)"
    return f"{what}, torch {torch.__version__.split('+')[0]}"


def config_dict(cfg: BuildConfig) -> dict:
    d = asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
