"""Whole programs: input handling + ResNet backbone, as exported to the device.

``KwsNet`` takes raw 16 kHz waveform (B, 16000) and contains the log-mel
front end and Google's speech_embedding (models/speech_embedding.py) with a
small keyword head on it; ``VisionNet`` takes float images in [0, 1] (B, C, H, W) and
normalizes inside. Only ``backbone`` is quantized to int8; the front end
stays float32 so host and device compute the same features.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from knowcache.atomic import replace_atomically
from knowcache.models.speech_embedding import (EMBEDDING_DIM, GoogleMel, Margins,
                                                SpeechEmbedding, padded_samples)
from knowcache.models.resnet import ResNet, ResNetConfig
from knowcache.models.spectrogram import SpectrogramNet
from knowcache.models.xnn_ops import max_over_time, mean_of


@dataclass(frozen=True)
class EmbeddingHeadConfig:
    """A keyword head on speech_embedding vectors: two 1-D convolutions over the
    sequence of embeddings, max over time, a linear layer. ``pad_s`` seconds of
    zeros are put on each side of the 1 s clip so every window position sees
    the whole word. With ``spectrogram`` (the full model), the head also reads
    the pooled features of a spectrogram ResNet branch (``side_hidden``
    units), dropped as a whole for ``branch_dropout`` of training samples so the
    head never leans on it alone. ``members`` > 1 makes the head an ensemble of
    that many heads, trained apart (each its own seed), whose logits are
    averaged: heads on the same frozen features differ by a point or more on
    real voices from seed alone, and their average beats the typical one."""
    hidden: int = 128
    dropout: float = 0.3
    pad_s: float = 0.5
    spectrogram: Optional[dict] = None     # {"resnet": ResNetConfig dict, "classes": n}
    side_hidden: int = 64
    branch_dropout: float = 0.5
    members: int = 1
    augment_at: int = 0

    def to_dict(self) -> dict:
        return {"kind": "embedding_head", **asdict(self)}

    @staticmethod
    def from_dict(d: dict) -> "EmbeddingHeadConfig":
        return EmbeddingHeadConfig(**{k: v for k, v in d.items() if k != "kind"})

    def scaled(self, factor: float) -> "EmbeddingHeadConfig":
        return replace(self, hidden=max(8, int(round(self.hidden * factor))))

    def student(self, factor: float) -> "EmbeddingHeadConfig":
        """A device student's head: narrower, one head, and no spectrogram branch."""
        return replace(self.scaled(factor), spectrogram=None, members=1, augment_at=0)

    @property
    def side(self) -> int:
        """Width of the spectrogram branch's pooled features (0: no branch)."""
        return self.spectrogram["resnet"]["widths"][-1] if self.spectrogram else 0


class EmbeddingHead(nn.Module):
    """(B, windows, 96) embeddings [+ (B, side) features] -> (B, classes) logits."""

    def __init__(self, config: EmbeddingHeadConfig, classes: int):
        super().__init__()
        h = config.hidden
        self.conv1 = nn.Conv1d(EMBEDDING_DIM, h, 3, padding=1)
        self.conv2 = nn.Conv1d(h, h, 3, padding=1)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(config.dropout)
        self.side = nn.Linear(config.side, config.side_hidden) if config.side else None
        self.branch_dropout = config.branch_dropout
        self.fc = nn.Linear(h + (config.side_hidden if config.side else 0), classes)

    def forward(self, e: torch.Tensor, side: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.relu(self.conv1(e.transpose(1, 2)))
        x = max_over_time(self.relu(self.conv2(self.dropout(x))))
        if self.side is not None:
            s = self.relu(self.side(side))
            if self.training and self.branch_dropout:
                keep = torch.rand(s.shape[0], 1, device=s.device) >= self.branch_dropout
                s = s * keep.to(s.dtype)
            x = torch.cat([x, s], dim=1)
        return self.fc(self.dropout(x))


class HeadEnsemble(nn.Module):
    """Several ``EmbeddingHead``s on the same inputs; their logits averaged."""

    def __init__(self, config: EmbeddingHeadConfig, classes: int):
        super().__init__()
        self.members = nn.ModuleList(EmbeddingHead(config, classes)
                                     for _ in range(config.members))

    @property
    def side(self) -> Optional[nn.Module]:
        return self.members[0].side

    def forward(self, e: torch.Tensor, side: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mean_of([m(e, side) for m in self.members])


class KwsBackbone(nn.Module):
    """(B, frames, 32) log-mel [+ side features] -> logits: the speech_embedding
    trunk (working only where the input is not padding, given ``margins``), then
    the head (or an ensemble of heads)."""

    def __init__(self, config: EmbeddingHeadConfig, classes: int, margins: Margins | None = None):
        super().__init__()
        self.trunk = SpeechEmbedding(margins)
        if config.members > 1:
            self.head = HeadEnsemble(config, classes)
        else:
            self.head = EmbeddingHead(config, classes)
            self.fc = self.head.fc

    def forward(self, mel: torch.Tensor, side: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.trunk(mel), side)


class KwsNet(nn.Module):
    """(B, 16000) waveform in [-1, 1] -> logits. ``features`` (zero padding and
    the log-mel front end) stays float32; ``backbone`` is what int8 quantizes.
    The full model adds ``spectrogram``, a ResNet branch whose pooled features
    the head reads beside the embeddings."""

    def __init__(self, config: EmbeddingHeadConfig, classes: int, samples: int = 16000):
        super().__init__()
        self.samples = samples
        total = padded_samples(samples, config.pad_s)
        self.left = int(round(config.pad_s * 16000))
        self.right = total - samples - self.left
        # the zero padding around the clip is the front end's margins: never transformed
        self.frontend = GoogleMel(total, margins=(self.left, self.right))
        fe = self.frontend
        self.backbone = KwsBackbone(config, classes, Margins(fe.frames, fe.first, fe.stop))
        self.spectrogram = None
        if config.spectrogram:
            sc = config.spectrogram
            self.spectrogram = SpectrogramNet(ResNetConfig.from_dict(sc["resnet"]), sc["classes"])

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """The log-mel of the clip with pad_s of zeros each side."""
        return self.frontend(wave)

    def embeddings(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, windows, 96): what the head sees; frozen, so computed once for training."""
        return self.backbone.trunk(self.features(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        side = self.spectrogram.pooled(wave) if self.spectrogram is not None else None
        return self.backbone(self.features(wave), side)


class VisionNet(nn.Module):
    def __init__(self, config: ResNetConfig, classes: int, mean: float = 0.5, std: float = 0.25):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.backbone = ResNet(config, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.features(x))


@dataclass
class ModelRecord:
    """A trained model and what it needs to be rebuilt: saved as one .pt file."""
    task: str
    role: str                 # full | cached | partition | generic
    name: str
    labels: list[str]         # output labels, "other" included where there is one
    config: ResNetConfig | EmbeddingHeadConfig
    norm: tuple[float, float]
    state_dict: dict
    other_label: str | None = None
    metrics: dict | None = None

    def build(self) -> nn.Module:
        model = build_net(self.task, self.config, len(self.labels), self.norm)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, path: str | os.PathLike) -> Path:
        doc = dict(vars(self))
        doc["config"] = self.config.to_dict()
        return replace_atomically(path, lambda tmp: torch.save(doc, tmp))

    @staticmethod
    def load(path: str | os.PathLike) -> "ModelRecord":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no trained model at {path}")
        doc = torch.load(path, map_location="cpu", weights_only=False)
        doc["config"] = config_from_dict(doc["config"])
        doc["norm"] = tuple(doc["norm"])
        return ModelRecord(**doc)


def config_from_dict(d: dict) -> ResNetConfig | EmbeddingHeadConfig:
    if d.get("kind") == "embedding_head":
        return EmbeddingHeadConfig.from_dict(d)
    return ResNetConfig.from_dict(d)


def build_net(task: str, config: ResNetConfig | EmbeddingHeadConfig, classes: int,
              norm: tuple[float, float] = (0.0, 1.0)) -> nn.Module:
    """A task's network; ``norm`` is an image input's (mean, std), unused by kws. Every
    image task (built in or ingested from a folder) takes the vision network."""
    if task == "kws":
        return KwsNet(config, classes)
    if not isinstance(config, ResNetConfig):
        raise ValueError(f"task {task!r} is an image task: its network needs a ResNetConfig")
    return VisionNet(config, classes, *norm)


# The full (cloud) models and the students' width factors. Students are the
# same network made narrower (kws: a narrower head on the same speech_embedding
# trunk), then int8: see docs/models.md for the sizes.
FULL_CONFIGS = {
    "kws": EmbeddingHeadConfig(hidden=128, members=3),
    "vision": ResNetConfig(in_channels=1, stem_width=48, stem_stride=1, widths=(48, 96, 192)),
}
STUDENT_WIDTH = {"kws": 1 / 2, "vision": 1 / 3}
QUICK_FULL_WIDTH = 1 / 4     # --quick: a small full model that trains in seconds on a CPU


def image_config(spec) -> ResNetConfig:
    """The full model of an image task (a ``tasks.TaskSpec``): the vision recipe's
    network, or the task file's own ``network``, for the task's channels."""
    cfg = replace(FULL_CONFIGS["vision"], in_channels=spec.image_size[0])
    net = spec.network
    if net is None:
        return cfg
    # A residual network's first stage keeps the resolution; conv_pool and airbench
    # stages all pool.
    first = 1 if net.block == "basic" else 2
    return replace(cfg, stem_width=net.stem_width, widths=net.widths, blocks=net.blocks,
                   strides=(first,) + (2,) * (len(net.widths) - 1), block=net.block)
