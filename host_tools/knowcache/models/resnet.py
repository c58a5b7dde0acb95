"""ResNet-style backbones shared by both tasks, sized by a small config.

One family for the full (cloud) model and every student: the students are
the same network made narrower, which is the "width reduction" half of
knowledge-caching compression (int8 is the other half).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 1
    stem_width: int = 32
    stem_stride: int = 2
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1)
    strides: tuple[int, ...] = (1, 2, 2)
    dropout: float = 0.1
    block: str = "basic"     # "basic" (residual, strided) or "conv_pool" (see ConvPoolBlock)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ResNetConfig":
        d = dict(d)
        for key in ("widths", "blocks", "strides"):
            d[key] = tuple(d[key])
        return ResNetConfig(**d)

    def scaled(self, factor: float) -> "ResNetConfig":
        """The same network with every width multiplied by ``factor`` (at least 4)."""
        w = lambda c: max(4, int(round(c * factor)))  # noqa: E731
        return replace(self, stem_width=w(self.stem_width), widths=tuple(w(c) for c in self.widths))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ConvPoolBlock(nn.Module):
    """Two 3x3 convolutions without a shortcut; with stride 2 the first one's
    output is max-pooled (after its ReLU, so each BatchNorm still folds into its
    convolution on export). The downsampling of the fast CIFAR-10 recipes
    (Page's ResNet-9, airbench): cheaper than a strided residual block at the same
    width, since the second convolution runs on the pooled map."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"a conv_pool block downsamples by 1 or 2, not {stride}")
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(2) if stride == 2 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.relu(self.bn1(self.conv1(x))))
        return self.relu(self.bn2(self.conv2(y)))


BLOCKS = {"basic": BasicBlock, "conv_pool": ConvPoolBlock}


class ResNet(nn.Module):
    """(B, C, H, W) -> (B, classes) logits."""

    def __init__(self, config: ResNetConfig, classes: int):
        super().__init__()
        c = config
        if not (len(c.widths) == len(c.blocks) == len(c.strides)):
            raise ValueError("widths, blocks and strides must have one entry per stage")
        if c.block not in BLOCKS:
            raise ValueError(f"unknown block {c.block!r}; one of {', '.join(BLOCKS)}")
        block = BLOCKS[c.block]
        self.stem = nn.Sequential(
            nn.Conv2d(c.in_channels, c.stem_width, 3, c.stem_stride, 1, bias=False),
            nn.BatchNorm2d(c.stem_width), nn.ReLU())
        layers: list[nn.Module] = []
        cin = c.stem_width
        for width, n, stride in zip(c.widths, c.blocks, c.strides):
            for i in range(n):
                layers.append(block(cin, width, stride if i == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


