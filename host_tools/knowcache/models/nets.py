"""Whole programs: input handling + ResNet backbone, as exported to the device.

``KwsNet`` takes raw 16 kHz waveform (B, 16000) and contains the log-mel
front end; ``VisionNet`` takes float images in [0, 1] (B, C, H, W) and
normalizes inside. Only ``backbone`` is quantized to int8; the front end
stays float32 so host and device compute the same features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from knowcache.atomic import replace_atomically
from knowcache.models.frontend import LogMel
from knowcache.models.resnet import ResNet, ResNetConfig


class KwsNet(nn.Module):
    def __init__(self, config: ResNetConfig, classes: int, feature_mean: float = 0.0,
                 feature_std: float = 1.0):
        super().__init__()
        self.frontend = LogMel()
        self.register_buffer("feature_mean", torch.tensor(float(feature_mean)))
        self.register_buffer("feature_std", torch.tensor(float(feature_std)))
        self.backbone = ResNet(config, classes)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return (self.frontend(wave) - self.feature_mean) / self.feature_std

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.features(wave))


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
    config: ResNetConfig
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
        doc["config"] = ResNetConfig.from_dict(doc["config"])
        doc["norm"] = tuple(doc["norm"])
        return ModelRecord(**doc)


def build_net(task: str, config: ResNetConfig, classes: int,
              norm: tuple[float, float] = (0.0, 1.0)) -> nn.Module:
    if task == "kws":
        return KwsNet(config, classes, *norm)
    if task == "vision":
        return VisionNet(config, classes, *norm)
    raise ValueError(f"unknown task {task!r}")


# The full (cloud) models and the students' width factors. Students are the
# same ResNet made narrower, then int8: see docs/models.md for the sizes.
FULL_CONFIGS = {
    "kws": ResNetConfig(in_channels=1, stem_width=48, stem_stride=2, widths=(48, 96, 192)),
    "vision": ResNetConfig(in_channels=1, stem_width=48, stem_stride=1, widths=(48, 96, 192)),
}
STUDENT_WIDTH = {"kws": 1 / 3, "vision": 1 / 3}
QUICK_FULL_WIDTH = 1 / 4     # --quick: a small full model that trains in seconds on a CPU
