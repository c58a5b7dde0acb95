"""Training: the full model from labels, students by distillation from it.

A student's label space is a subset of the task's classes plus "other"
(or all classes, for the generic student). Distillation collapses the
teacher's distribution onto that space, summing the probability of every
class the student does not own into "other", so the student learns both
its classes and when to defer to the cloud.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knowcache.data.dataset import model_input

Log = Callable[[str], None]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def as_float(task: str, x: np.ndarray) -> torch.Tensor:
    """Stored samples to the programs' float32 input (see dataset.model_input)."""
    return torch.from_numpy(model_input(task, x))


def augment(task: str, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """On-the-fly augmentation of a float batch (kws: time shift + gain; images: a
    shift per image + flip)."""
    b = x.shape[0]
    if task == "kws":
        shift = int(torch.randint(-1600, 1601, (1,), generator=gen, device="cpu"))
        x = torch.roll(x, shift, dims=1)
        if shift > 0:
            x[:, :shift] = 0
        elif shift < 0:
            x[:, shift:] = 0
        gain = torch.exp(torch.empty(b, 1, device="cpu").uniform_(-0.7, 0.7, generator=gen))
        return x * gain.to(x.device)
    x = shift_images(x, IMAGE_SHIFT, gen)
    flip = torch.rand(b, generator=gen, device="cpu") < 0.5
    return torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x)


IMAGE_SHIFT = 2   # pixels, each way (airbench's translate for short CIFAR-10 runs)


def shift_images(x: torch.Tensor, most: int, gen: torch.Generator) -> torch.Tensor:
    """Each image of an (N, C, H, W) batch moved by its own random offset of up to
    ``most`` pixels each way, edges reflected (it replaced one offset for the whole
    batch; on CIFAR-10 that moved the full model by +0.4 point: docs/image-tasks.md)."""
    b, _, h, w = x.shape
    pad = F.pad(x, (most, most, most, most), mode="reflect")
    dy, dx = torch.randint(0, 2 * most + 1, (2, b, 1), generator=gen, device="cpu").to(x.device)
    rows = dy + torch.arange(h, device=x.device)              # (N, H)
    cols = dx + torch.arange(w, device=x.device)              # (N, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # advanced indices on dims 0, 2, 3 around a slice put them first: (N, H, W, C)
    return pad[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class HeadOnly(nn.Module):
    """The trainable part of a KwsNet: its keyword head (the speech_embedding trunk
    and the spectrogram branch are frozen, so their outputs are computed once).

    Takes packed rows ``[embeddings (windows x 96) | spectrogram features]`` (see
    ``pipeline.inputs``); a head without a spectrogram branch reads the
    embeddings only. With ``hidden_at`` = k (the config's ``augment_at``) the rows
    carry the trunk's activations after conv k - 1 instead of the embeddings (the
    time steps the trunk keeps: ``speech_embedding.Margins``): the frozen convs
    k.. run at every step (without gradients), so the shifts and noise of
    ``augment`` act on the trunk's hidden layer."""

    def __init__(self, net: nn.Module, hidden_at: int = 0):
        super().__init__()
        from knowcache.models.speech_embedding import EMBEDDING_DIM, SpeechEmbedding
        self.net = net
        self.backbone = net.backbone.head     # `fit` reads backbone.fc
        self.hidden_at = hidden_at
        self.shape = (SpeechEmbedding.windows(net.frontend.frames), EMBEDDING_DIM)
        if hidden_at:
            self.shape = hidden_shape(net, hidden_at)
        self.width = math.prod(self.shape)

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :self.width].reshape(x.shape[0], *self.shape), x[:, self.width:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, side = self.unpack(x.float())
        if self.hidden_at:
            trunk = self.net.backbone.trunk
            with torch.no_grad():
                e = trunk.embed(trunk.trunk(e, self.hidden_at))
        return self.backbone(e, side if self.backbone.side is not None else None)

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Shifted in time by up to 160 ms (two embedding windows; four steps of the
        hidden layer), with a little noise."""
        e, side = self.unpack(x.float())
        time_axis, most = (2, 4) if self.hidden_at else (1, 2)
        shift = int(torch.randint(-most, most + 1, (1,), generator=gen, device="cpu"))
        noise = torch.randn(e.shape, generator=gen, device="cpu").to(e.device)
        e = torch.roll(e, shift, dims=time_axis) + (0.05 if self.hidden_at else 0.1) * e.std() * noise
        return torch.cat([e.reshape(x.shape[0], -1), side.float()], dim=1)


def hidden_shape(net: nn.Module, hidden_at: int) -> tuple[int, ...]:
    """(channels, kept time steps, mel) of a KwsNet's trunk activations after convs 0 .. hidden_at - 1."""
    with torch.no_grad():
        probe = net.features(torch.zeros(1, net.samples)).unsqueeze(1)
        return tuple(net.backbone.trunk.trunk(probe, 0, hidden_at).shape[1:])


def trainable(task: str, net: nn.Module, hidden_at: int = 0) -> nn.Module:
    """What training updates: the whole vision net; the head of a kws net (fed the
    trunk's activations after conv ``hidden_at`` - 1 when given, else embeddings)."""
    return HeadOnly(net, hidden_at) if task == "kws" else net


def collapse_matrix(student_classes: Sequence[int], total: int, has_other: bool) -> torch.Tensor:
    """(total, student outputs) 0/1 matrix mapping task classes to the student's outputs."""
    outputs = len(student_classes) + (1 if has_other else 0)
    m = torch.zeros(total, outputs)
    owned = {c: i for i, c in enumerate(student_classes)}
    for c in range(total):
        if c in owned:
            m[c, owned[c]] = 1.0
        elif has_other:
            m[c, outputs - 1] = 1.0
    return m


def tempered(p: torch.Tensor, t: float) -> torch.Tensor:
    """p ** (1/t), renormalized: a collapsed distribution at temperature t.

    Collapsing must happen at temperature 1. Summing softmax(z / t) over the
    classes a student does not own would inflate "other": at t = 3 the 26
    small logits of a confident keyword teacher add up to about half the mass.
    """
    q = p.clamp(min=1e-12) ** (1.0 / t)
    return q / q.sum(dim=1, keepdim=True)


@dataclass
class FitConfig:
    epochs: int = 30
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    kd_alpha: float = 0.8        # weight of the distillation term when there is a teacher
    kd_temperature: float = 3.0
    seed: int = 0
    optimizer: str = "adamw"     # or "sgd" (Nesterov, momentum 0.9: the CIFAR-10 recipes')


class TeacherMemo:
    """The teacher's logits at every training step, kept for the next student.

    Students distilled from one teacher with the same seed, batch and epochs
    on the same inputs see the very same augmented batches (the order and the
    augmentation come from the seeded generator), so the teacher's forward pass,
    on the CPU most of a small student's training time, need only run once for
    all of them. Each step is keyed by its index and checked by a fingerprint
    of its batch: a batch that differs is recomputed, never reused."""

    def __init__(self):
        self._steps: dict[int, tuple[float, torch.Tensor]] = {}
        self.reused = 0

    def logits(self, step: int, xb: torch.Tensor, teacher: nn.Module) -> torch.Tensor:
        mark = float(xb.double().sum()) + float(xb.flatten()[::97].double().square().sum())
        kept = self._steps.get(step)
        if kept is not None and kept[0] == mark:
            self.reused += 1
            return kept[1].to(xb.device).float()
        kept = (mark, teacher(xb).detach().to("cpu", torch.float16))
        self._steps[step] = kept
        return kept[1].to(xb.device).float()   # the same rounding for every student


def fit(model: nn.Module, task: str, x: torch.Tensor, y: torch.Tensor, config: FitConfig,
        device: torch.device, *, teacher: Optional[nn.Module] = None,
        collapse: Optional[torch.Tensor] = None, sample_weight: Optional[torch.Tensor] = None,
        memo: Optional[TeacherMemo] = None, log: Log = print,
        name: str = "model") -> nn.Module:
    """Trains ``model`` on (x, y) where y is already in the model's label space.

    With a teacher, ``collapse`` maps the teacher's classes onto the model's
    outputs; the loss is kd_alpha * KD + (1 - kd_alpha) * cross entropy; a
    ``memo`` shared between students keeps the teacher's logits (TeacherMemo).
    Classes are balanced by weighting both terms by the inverse class frequency,
    times ``sample_weight`` when given (e.g. to give real recordings the weight of
    the far more numerous synthesized ones).
    """
    torch.manual_seed(config.seed)
    torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(config.seed)
    model = model.to(device).train()
    if teacher is not None:
        teacher = teacher.to(device).eval()
        collapse = collapse.to(device)
    classes = int(model.backbone.fc.out_features)
    counts = torch.bincount(y, minlength=classes).float()
    weight = (counts.sum() / (classes * counts.clamp(min=1))).to(device)
    sample_w = (torch.ones(len(y)) if sample_weight is None else sample_weight.float()).to(device)
    airbench = config.optimizer == "airbench"
    whitening = _fit_whitening(model, x, device, teacher)
    opt = _optimizer(model, config)
    steps = config.epochs * math.ceil(len(y) / config.batch)
    if airbench:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(_triangle, steps=steps))
        lookahead = Lookahead(model, steps)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps,
                                                    pct_start=0.15 if config.optimizer == "adamw"
                                                    else 0.25)
    # images: convolutions run faster channels-last, where oneDNN is safe; else every
    # batch is made contiguous (shift_images returns channels-last views)
    layout = (torch.channels_last if x.dim() == 4 and use_onednn(device)
              else torch.contiguous_format)
    if layout == torch.channels_last:
        model = model.to(memory_format=layout)
        if teacher is not None:
            teacher = teacher.to(memory_format=layout)
    x_dev, y_dev = x.to(device), y.to(device)
    t = config.kd_temperature
    step = 0
    # oneDNN only where its backward is safe for these networks
    with backward_kernels(device, *[m for m in (model, teacher) if m is not None]):
        for epoch in range(config.epochs):
            order = torch.randperm(len(y), generator=gen).to(device)
            for w in whitening:            # airbench: the whitening bias learns for 3 epochs
                w.bias.requires_grad = epoch < WHITENING_BIAS_EPOCHS
            total, correct, loss_sum = 0, 0, 0.0
            for start in range(0, len(y), config.batch):
                idx = order[start:start + config.batch]
                xb = (model.augment(x_dev[idx], gen) if isinstance(model, HeadOnly)
                      else augment(task, x_dev[idx], gen))
                if xb.dim() == 4:
                    xb = xb.contiguous(memory_format=layout)
                yb = y_dev[idx]
                w = weight[yb] * sample_w[idx]
                with _autocast(device, x.dim() == 4):
                    logits = model(xb).float()
                loss = (F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing,
                                        reduction="none") * w).sum() / w.sum()
                if teacher is not None:
                    with torch.no_grad(), _autocast(device, x.dim() == 4):
                        z = (memo.logits(step, xb, teacher) if memo is not None
                             else teacher(xb).float())
                        target = tempered(F.softmax(z, dim=1) @ collapse, t)
                    # Class-balanced like the cross entropy: without it "other" (most
                    # of a cached student's data) becomes the prior, and the student
                    # defers on its own classes whenever it is unsure.
                    kd = (F.kl_div(F.log_softmax(logits / t, dim=1), target.clamp(min=1e-8),
                                   reduction="none").sum(1) * w).sum() / w.sum() * t * t
                    loss = config.kd_alpha * kd + (1 - config.kd_alpha) * loss
                opt.zero_grad(set_to_none=True)
                (loss * len(yb) if airbench else loss).backward()   # airbench sums over the batch
                opt.step()
                sched.step()
                step += 1
                if airbench:
                    lookahead.step(model, step)
                total += len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                loss_sum += loss.item() * len(yb)
            if epoch == config.epochs - 1 or epoch % max(1, config.epochs // 5) == 0:
                log(f"{name}: epoch {epoch + 1}/{config.epochs} loss {loss_sum / total:.3f} "
                    f"train acc {correct / total:.3f}")
    if airbench:
        lookahead.finish(model)
    if teacher is not None:
        teacher.to(memory_format=torch.contiguous_format)
    return model.eval().cpu().to(memory_format=torch.contiguous_format)


WHITENING_BIAS_EPOCHS = 3
WHITENING_IMAGES = 5000


def _fit_whitening(model: nn.Module, x: torch.Tensor, device: torch.device = torch.device("cpu"),
                   teacher: Optional[nn.Module] = None) -> list[nn.Module]:
    """Sets every whitening stem of an image model (on ``device``) from the first
    5,000 training inputs, as the model normalizes them; returns those stems. A
    student whose teacher has the same stems and normalizes the same way takes the
    teacher's filters: they whiten the same patches, so they are not fitted again."""
    from knowcache.models.resnet import Whitening
    stems = [m for m in model.modules() if isinstance(m, Whitening)]
    if not stems:
        return stems
    taught = ([m for m in teacher.modules() if isinstance(m, Whitening)]
              if teacher is not None else [])
    with torch.no_grad():
        if ([m.weight.shape for m in taught] == [m.weight.shape for m in stems]
                and torch.equal(model.features(x[:8].float().to(device)),
                                teacher.features(x[:8].float().to(device)))):
            for stem, source in zip(stems, taught):
                stem.weight.copy_(source.weight)
            return stems
        sample = model.features(x[:WHITENING_IMAGES].float().to(device))
    for stem in stems:
        stem.fit_to(sample)
    return stems


def _triangle(step: int, steps: int, start: float = 0.2, peak: float = 0.23,
              end: float = 0.07) -> float:
    """airbench's learning-rate factor: linear from ``start`` to 1 at ``peak`` of the
    steps, then linear down to ``end``."""
    f = step / max(1, steps)
    if f < peak:
        return start + (1.0 - start) * f / peak
    return 1.0 - (1.0 - end) * (f - peak) / (1.0 - peak)


class Lookahead:
    """airbench's lookahead: every 5 steps the weights (and norm statistics) are
    pulled towards a slow copy, ever more strongly as training ends
    (decay 0.95^5 (step / steps)^3), and the slow copy becomes the model."""

    EVERY = 5

    def __init__(self, model: nn.Module, steps: int):
        self.steps = steps
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items()
                     if v.dtype.is_floating_point}

    def step(self, model: nn.Module, step: int) -> None:
        if step % self.EVERY == 0:
            self._pull(model, 0.95 ** 5 * (step / self.steps) ** 3)

    def finish(self, model: nn.Module) -> None:
        self._pull(model, 1.0)

    @torch.no_grad()
    def _pull(self, model: nn.Module, decay: float) -> None:
        state = model.state_dict()
        for k, slow in self.slow.items():
            slow.lerp_(state[k], 1.0 - decay)
            state[k].copy_(slow)


def _optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    if config.optimizer == "airbench":
        return _airbench_optimizer(model, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use adamw, sgd or airbench")


AIRBENCH_MOMENTUM = 0.85
AIRBENCH_BIAS_SCALER = 64.0


def _airbench_optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    """airbench's SGD: Nesterov momentum 0.85 on a loss summed over the batch, with
    ``lr`` and ``weight_decay`` given per 1024 examples and decoupled from each
    other (so neither moves when the other or the momentum does); norm shifts
    learn 64x faster, the classifier 81x slower (it stands for airbench's
    logits scaled by 1/9: models.resnet.AIRBENCH_LOGIT_SCALE)."""
    from knowcache.models.resnet import AIRBENCH_LOGIT_SCALE, NormNoScale
    scale = 1024 * (1 + 1 / (1 - AIRBENCH_MOMENTUM))
    lr = config.lr / scale
    decay = config.weight_decay * config.batch / scale
    norm_ids, fc_ids = set(), set()
    for m in model.modules():
        if isinstance(m, NormNoScale):
            norm_ids.add(id(m.bias))
    fc = getattr(getattr(model, "backbone", None), "fc", None)
    if fc is not None:
        fc_ids = {id(p) for p in fc.parameters()}
    groups: dict[str, list] = {"norm": [], "fc": [], "rest": []}
    for p in model.parameters():
        if not p.requires_grad:      # frozen: norm scales, whitening filters
            continue
        key = "norm" if id(p) in norm_ids else "fc" if id(p) in fc_ids else "rest"
        groups[key].append(p)
    rates = {"norm": lr * AIRBENCH_BIAS_SCALER, "fc": lr * AIRBENCH_LOGIT_SCALE ** 2, "rest": lr}
    return torch.optim.SGD([dict(params=ps, lr=rates[k], weight_decay=decay / rates[k])
                            for k, ps in groups.items() if ps],
                           momentum=AIRBENCH_MOMENTUM, nesterov=True)


def _autocast(device: torch.device, images: bool):
    """bf16 autocast for training speed: on CUDA, and for image networks on CPUs
    with native bf16 (AVX512-BF16 / AMX: 1.8x faster training of the CIFAR-10
    network on this project's 2-core x86 machines); elsewhere a no-op, since
    emulated bf16 is slower than fp32 (and the kws heads are small matmuls)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16,
                          enabled=images and _cpu_bf16())


def use_onednn(device: torch.device, *models: nn.Module) -> bool:
    """Whether training ``models`` runs oneDNN's kernels: on CUDA and on CPUs with
    AVX-512 always; on other CPUs only for convolutional networks without 1x1
    convolutions. There, torch 2.13's oneDNN backward of a strided 1x1
    convolution with fewer than 8 channels (jit_avx2_1x1_convolution_bwd_weights)
    corrupts the heap: measured on an AMD EPYC Zen 3 (AVX2), an abort ("free():
    invalid next size") channels-last, a hang with two threads in contiguous
    layout; small image students and tiny tasks have such convolutions. The kws
    heads and their exits (1-D kernels of 3) have none, and torch's own kernels
    train them 3x slower (a kws student's step; 7x its teacher's forward); a
    network of linear layers only (the image exit heads) trains 2x faster
    without oneDNN. Channels-last (asked with no network) stays CUDA and
    AVX-512 only."""
    if device.type == "cuda" or torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return True
    # A kws HeadOnly runs its head (and, with hidden_at, the trunk), never the
    # spectrogram branch its network also holds.
    running = [part for model in models for part in (
        [model.backbone] + ([model.net.backbone.trunk] if model.hidden_at else [])
        if isinstance(model, HeadOnly) else [model])]
    convs = [m for part in running for m in part.modules()
             if isinstance(m, nn.modules.conv._ConvNd)]
    return bool(convs) and not any(all(k == 1 for k in c.kernel_size) for c in convs)


@contextlib.contextmanager
def backward_kernels(device: torch.device, *models: nn.Module):
    """Context for training ``models``: oneDNN on or off as ``use_onednn`` says
    (off: torch's own convolution kernels run).
    (Setting the flags makes torch warn about TF32 on Intel GPUs, which are not
    used here: that warning is silenced.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*TF32 acceleration on top of oneDNN.*")
        with torch.backends.mkldnn.flags(enabled=use_onednn(device, *models)):
            yield


@functools.cache
def _cpu_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch: int = 512) -> np.ndarray:
    """Logits of ``model`` (eval mode) on x, as a NumPy array."""
    model = model.to(device).eval()
    out = [model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]
    model.cpu()
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def feature_stats(model: nn.Module, x: torch.Tensor, batch: int = 512) -> tuple[float, float]:
    """Mean and std of the model's input features (before normalization) on x."""
    feats = torch.cat([model.frontend(x[i:i + batch]) for i in range(0, min(len(x), 4096), batch)])
    return float(feats.mean()), float(feats.std())
