"""The model build, stage by stage: full model -> cached + generic students ->
CacheNet partitions (training, any device) -> int8 export, calibration and
model card (`knowcache.build.publish`, CPU with ExecuTorch).

Every stage reads and writes a work folder of ``ModelRecord`` files, so the
stages can run on different machines (train on a GPU, export on the host)
and `knowcache build-models` simply runs them in order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from knowcache.atomic import replace_atomically
from knowcache.build import partitioning, specialize, training
from knowcache.data import Dataset, store
from knowcache.models import FULL_CONFIGS, STUDENT_WIDTH, ModelRecord, build_net
from knowcache.models.nets import QUICK_FULL_WIDTH, image_config
from knowcache.models.resnet import ResNetConfig
from knowcache.models.spectrogram import SPECTROGRAM_CONFIG, SpectrogramNet
from knowcache import tasks
from knowcache.tasks import VISION_CIFAR10, TaskSpec

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
    real: Optional[Path] = None               # kws: folder of real <word>/*.wav, split by speaker
    real_weight: float = 0.5                  # share of the training weight the real clips get
    real_copies: int = 8                      # perturbed takes of each real training clip
    piper_per_word: int = 0                   # kws: piper-tts training clips per keyword (0: none)
    piper_weight: float = 0.15                # share of the training weight the piper clips get
    spectrogram_from: Optional[Path] = None   # kws: reuse this .pte as the spectrogram branch
    hidden_augment: int = 0                   # kws: full model heads augmented after trunk conv k-1
    other_recall: Optional[float] = None      # students' "other" floor (task default if None)
    extra: dict = field(default_factory=dict)

    def spec(self) -> TaskSpec:
        if self.task == "vision" and self.cifar10:
            return VISION_CIFAR10
        return tasks.get(self.task)

    @property
    def piper_clips_per_word(self) -> int:
        """piper-tts clips per keyword this build adds: kws on synthesized speech only
        (not when it trains on a real Speech Commands folder), 2 with ``quick``."""
        if self.task != "kws" or self.speech_commands is not None or self.piper_per_word < 1:
            return 0
        return min(2, self.piper_per_word) if self.quick else self.piper_per_word

    @property
    def other_floor(self) -> float:
        """Share of the validation inputs of classes a student does not own that must
        stay "other" when its "other" logit is lowered (``specialize.fit_other_bias``):
        given, or 0.92 for kws (its target is 90% on real voices; 2 points of margin
        for new speakers) and 0.95 for image tasks."""
        if self.other_recall is not None:
            if not 0.0 < self.other_recall <= 1.0:
                raise ValueError(f"other_recall {self.other_recall} must be in (0, 1]")
            return self.other_recall
        return 0.92 if self.task == "kws" else 0.95

    @property
    def family(self) -> str:
        """kws, or vision (every image task takes the vision recipe)."""
        return tasks.family(self.task)

    def epochs(self, which: str) -> int:
        given = {"full": self.full_epochs, "spectrogram": self.full_epochs}.get(
            which, self.student_epochs)
        if given is not None:
            if given < 1:
                raise ValueError("epochs must be at least 1")
            return given
        if self.quick:
            return 3
        own = self._training()
        if own is not None:
            given = own.epochs if which == "full" else own.student_epochs
            if given is not None:
                return given
        if self.task == "kws" and which == "full" and self.hidden_augment:
            return 20      # each step runs part of the trunk: half the epochs were enough
        return {("kws", "full"): 40, ("kws", "student"): 30, ("kws", "spectrogram"): 40,
                ("vision", "full"): 30,
                ("vision", "student"): 20}[(self.family, which)]

    def full_config(self):
        cfg = FULL_CONFIGS[self.family]
        if self.family == "vision":
            cfg = image_config(self.spec())
        if self.task == "kws":
            branch = SPECTROGRAM_CONFIG.scaled(QUICK_FULL_WIDTH) if self.quick else SPECTROGRAM_CONFIG
            cfg = replace(cfg, spectrogram={"resnet": branch.to_dict(),
                                            "classes": len(self.spec().labels)},
                          augment_at=self.hidden_augment)
        return cfg.scaled(QUICK_FULL_WIDTH) if self.quick else cfg

    def student_config(self):
        if self.task == "kws":
            return self.full_config().student(STUDENT_WIDTH["kws"])
        net = self.spec().network if self.family == "vision" else None
        return self.full_config().scaled(net.student_width if net else STUDENT_WIDTH[self.family])

    def fit(self, which: str) -> training.FitConfig:
        if self.task == "kws" and which != "spectrogram":   # a head on frozen features
            return training.FitConfig(epochs=self.epochs(which), seed=self.seed, batch=128,
                                      weight_decay=1e-2)
        fit = training.FitConfig(epochs=self.epochs(which), seed=self.seed,
                                 batch=64 if self.quick else 256)
        own = self._training()
        if own is None:
            return fit
        given = {k: getattr(own, k) for k in ("optimizer", "lr", "weight_decay",
                                                "label_smoothing")}
        if not self.quick:
            given["batch"] = own.batch
        return replace(fit, **{k: v for k, v in given.items() if v is not None})

    def _training(self):
        """The task file's training recipe (image tasks), or None."""
        return self.spec().training if self.family == "vision" else None


def load_data(cfg: BuildConfig, log: training.Log = print, progress=None) -> Dataset:
    data = store.for_task(cfg.task, seed=cfg.seed, quick=cfg.quick,
                          speech_commands=cfg.speech_commands, fashion_mnist=cfg.fashion_mnist,
                          cifar10=cfg.cifar10, progress=progress)
    if cfg.real is not None:
        data = store.with_real(data, cfg.real, seed=cfg.seed, copies=cfg.real_copies)
    if cfg.piper_clips_per_word:
        data = store.with_piper(data, per_word=cfg.piper_clips_per_word, seed=cfg.seed,
                                progress=progress)
    log(data.summary())
    if tuple(data.labels) != cfg.spec().labels:
        raise ValueError(f"data set labels {data.labels} do not match task {cfg.task}")
    return data


EMBEDDINGS = "embeddings.npz"


def inputs(cfg: BuildConfig, data: Dataset, split: str, hidden_at: int = 0) -> torch.Tensor:
    """What training feeds ``training.trainable(net, hidden_at)`` for a split: float
    images for vision; for kws, packed rows of the frozen parts' outputs on each
    clip, the speech embeddings (or, with ``hidden_at``, the trunk's activations
    after conv ``hidden_at`` - 1, as float16) then the spectrogram branch's
    features (``HeadOnly``), computed once and kept in the work folder (keyed by
    the data set)."""
    sp = data.split(split)
    if cfg.task != "kws":
        return training.as_float(cfg.task, sp.x)
    branch = spectrogram_branch(cfg)
    key = (f"{data.source}|{split}|{len(sp)}|{int(sp.y.astype(np.int64).sum())}|"
           f"{branch.metrics['digest']}" + (f"|hidden{hidden_at}kept" if hidden_at else ""))
    path = cfg.work / (f"hidden{hidden_at}.npz" if hidden_at else EMBEDDINGS)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:     # reads only the arrays asked for
            if f"{split}_key" in z.files and str(z[f"{split}_key"]) == key:
                return torch.from_numpy(z[f"{split}_x"])
            cached = {name: z[name] for name in z.files}
    else:
        cached = {}
    net = build_net("kws", cfg.full_config(), len(data.labels)).eval()
    net.spectrogram.load_state_dict(branch.state_dict)
    x = training.as_float("kws", sp.x)
    rows = []
    with torch.no_grad():
        for i in range(0, len(x), 128):
            xb = x[i:i + 128]
            if hidden_at:
                mel = net.features(xb).unsqueeze(1)
                frozen = net.backbone.trunk.trunk(mel, 0, hidden_at).flatten(1).half()
                rows.append(torch.cat([frozen, net.spectrogram.pooled(xb).half()], 1))
            else:
                rows.append(torch.cat([net.embeddings(xb).flatten(1), net.spectrogram.pooled(xb)], 1))
    packed = torch.cat(rows) if rows else torch.zeros(0, 1)
    cached.update({f"{split}_x": packed.numpy(), f"{split}_key": np.array(key)})
    cfg.work.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: np.savez(tmp, **cached), suffix=".tmp.npz")
    return packed


SPECTROGRAM = "spectrogram.pt"


def spectrogram_branch(cfg: BuildConfig, data: Dataset | None = None,
                       log: training.Log = print) -> ModelRecord:
    """The kws full model's spectrogram ResNet: from the work folder, recovered from
    ``cfg.spectrogram_from`` (a previous kws full.pte), or trained here on the
    training waveforms (the previous full model's recipe)."""
    path = cfg.work / SPECTROGRAM
    if path.is_file():
        return ModelRecord.load(path)
    if data is None:
        raise FileNotFoundError(f"no spectrogram branch in {cfg.work}; run `knowcache train "
                                "--task kws` first")
    branch_cfg = ResNetConfig.from_dict(cfg.full_config().spectrogram["resnet"])
    labels = list(data.labels)
    if cfg.spectrogram_from is not None:
        from knowcache.models.from_program import recover
        log(f"spectrogram branch: recovered from {cfg.spectrogram_from}")
        rec = recover(cfg.spectrogram_from, "kws", labels,
                      training.as_float("kws", data.val.x[:16]).numpy())
        state, norm, config = rec.state_dict, rec.norm, rec.config
        source = f"recovered from {cfg.spectrogram_from.name}"
    else:
        device = training.pick_device(cfg.device)
        x = training.as_float("kws", data.train.x)
        y = torch.from_numpy(data.train.y.astype(np.int64))
        norm = training.feature_stats(SpectrogramNet(branch_cfg, 1), x)
        net = SpectrogramNet(branch_cfg, len(labels), *norm)
        log(f"spectrogram branch: {sum(p.numel() for p in net.parameters()):,} parameters "
            f"on {device}")
        training.fit(net, "kws", x, y, cfg.fit("spectrogram"), device, log=log,
                     name="spectrogram", sample_weight=sample_weights(cfg, data))
        state, config, source = net.state_dict(), branch_cfg, f"trained on {data.source}"
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
    rec = ModelRecord(task="kws", role="spectrogram", name="spectrogram", labels=labels,
                      config=config, norm=tuple(norm), state_dict=state,
                      metrics={"source": source, "digest": digest[:16]})
    rec.save(path)
    return rec


def sample_weights(cfg: BuildConfig, data: Dataset) -> Optional[torch.Tensor]:
    """Training weights that give the real recordings ``cfg.real_weight`` of the
    total and the piper-tts clips ``cfg.piper_weight`` (both are far fewer than
    the espeak-ng clips, which get the rest); None when the training split is
    of one kind only."""
    real, piper = store.is_real(data.train), store.is_piper(data.train)
    parts = [(m, share) for m, share in ((real, cfg.real_weight), (piper, cfg.piper_weight))
             if m.any()]
    rest = ~(real | piper)
    if rest.any():
        left = 1.0 - sum(share for _, share in parts)
        if left <= 0:
            raise ValueError(f"real_weight {cfg.real_weight} and piper_weight {cfg.piper_weight} "
                             "leave no training weight for the synthesized espeak-ng clips; "
                             "their sum must be below 1")
        parts.append((rest, left))
    if len(parts) < 2:
        return None
    w = np.zeros(len(real))
    total = sum(share for _, share in parts)
    for m, share in parts:
        w[m] = share / total / m.sum()
    return torch.from_numpy(w * len(w)).float()


def _plan(cfg: BuildConfig) -> dict:
    path = cfg.work / PLAN
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_plan(cfg: BuildConfig, plan: dict) -> None:
    cfg.work.mkdir(parents=True, exist_ok=True)
    (cfg.work / PLAN).write_text(json.dumps(plan, indent=2) + "\n")


def train_full(cfg: BuildConfig, data: Dataset, log: training.Log = print) -> ModelRecord:
    device = training.pick_device(cfg.device)
    if cfg.task == "kws":
        spectrogram_branch(cfg, data, log)
    config = cfg.full_config()
    hidden_at = getattr(config, "augment_at", 0)
    x = inputs(cfg, data, "train", hidden_at)
    y = torch.from_numpy(data.train.y.astype(np.int64))
    norm = (0.0, 1.0)
    if cfg.family == "vision":
        norm = (float(x.mean()), float(x.std()))
    members = getattr(config, "members", 1)
    heads = []
    for i in range(members):            # an ensemble's heads train apart, one seed each
        torch.manual_seed(cfg.seed + i)
        model = build_net(cfg.task, replace(config, members=1) if members > 1 else config,
                          len(data.labels), norm)
        if cfg.task == "kws":
            model.spectrogram.load_state_dict(spectrogram_branch(cfg).state_dict)
        what = f"full model{f' (head {i + 1} of {members})' if members > 1 else ''}"
        log(f"{what}: {sum(p.numel() for p in model.parameters()):,} parameters on {device}")
        training.fit(training.trainable(cfg.task, model, hidden_at), cfg.task, x, y,
                     replace(cfg.fit("full"), seed=cfg.seed + i), device,
                     sample_weight=sample_weights(cfg, data), log=log, name="full")
        if members > 1:
            heads.append(model.backbone.head)
    if members > 1:
        model = build_net(cfg.task, config, len(data.labels), norm)
        model.spectrogram.load_state_dict(spectrogram_branch(cfg).state_dict)
        for member, head in zip(model.backbone.head.members, heads):
            member.load_state_dict(head.state_dict())
    val = training.predict(training.trainable(cfg.task, model), inputs(cfg, data, "val"),
                           device).argmax(1)
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


def run_specialize(cfg: BuildConfig, data: Dataset, log: training.Log = print,
                   memo: Optional[training.TeacherMemo] = None) -> dict:
    """Knowledge caching: the cached student (+ other) and the generic student.
    ``memo`` (shared with run_partition) keeps the teacher's logits between students."""
    memo = memo or training.TeacherMemo()
    spec, full = cfg.spec(), _full(cfg)
    device = training.pick_device(cfg.device)
    cached = spec.cached_classes(cfg.classes or None, cfg.private)
    owned = specialize.owned_indices(data.labels, cached)
    x = inputs(cfg, data, "train")
    y = torch.from_numpy(data.train.y.astype(np.int64))
    w = sample_weights(cfg, data)
    student = cfg.student_config()
    log(f"cached classes ({len(cached)}): {', '.join(cached)}")
    rec = specialize.distil(full, "cached", "cached", owned, student, x, y, cfg.fit("student"),
                            device, log, sample_weight=w, memo=memo)
    rec.save(cfg.work / "cached.pt")
    gen = specialize.distil(full, "generic", "generic", None, student, x, y, cfg.fit("student"),
                            device, log, sample_weight=w, memo=memo)
    gen.save(cfg.work / "generic.pt")
    plan = _plan(cfg)
    plan.update({"cached": "cached.pt", "cached_classes": list(cached), "generic": "generic.pt",
                 "private": list(cfg.private)})
    _save_plan(cfg, plan)
    return plan


def run_partition(cfg: BuildConfig, data: Dataset, log: training.Log = print,
                  memo: Optional[training.TeacherMemo] = None) -> dict:
    """CacheNet: K partitions grouped by the full model's confusions, one student each."""
    memo = memo or training.TeacherMemo()
    spec, full = cfg.spec(), _full(cfg)
    k = cfg.k or spec.partitions
    device = training.pick_device(cfg.device)
    probs = torch.softmax(torch.from_numpy(training.predict(
        training.trainable(cfg.task, full.build()), inputs(cfg, data, "val"), device)), 1).numpy()
    confusion = partitioning.soft_confusion(probs, data.val.y, len(data.labels))
    groups = partitioning.group_classes(confusion, k)
    inside = partitioning.within_group_confusion(confusion, groups)
    log(f"{k} partitions keep {inside:.1%} of the full model's confusions inside a partition")
    x = inputs(cfg, data, "train")
    y = torch.from_numpy(data.train.y.astype(np.int64))
    w = sample_weights(cfg, data)
    files = []
    for i, g in enumerate(groups):
        log(f"partition p{i}: {', '.join(data.labels[c] for c in g)}")
        rec = specialize.distil(full, "partition", f"p{i}", g, cfg.student_config(), x, y,
                                cfg.fit("student"), device, log, sample_weight=w, memo=memo)
        files.append(rec.save(cfg.work / f"p{i}.pt").name)
    plan = _plan(cfg)
    plan.update({"partitions": files, "groups": [[data.labels[c] for c in g] for g in groups],
                 "confusion_inside": inside})
    _save_plan(cfg, plan)
    return plan


def train_models(cfg: BuildConfig, data: Dataset, log: training.Log = print) -> dict:
    """Every model of the task: the full model, then its students, which share one
    TeacherMemo so the teacher runs once for all of them. Returns the plan."""
    train_full(cfg, data, log)
    memo = training.TeacherMemo()
    run_specialize(cfg, data, log, memo)
    return run_partition(cfg, data, log, memo)


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
