"""ResNet-style backbones shared by both tasks, sized by a small config.

One family for the full (cloud) model and every student: the students are
the same network made narrower, which is the "width reduction" half of
knowledge-caching compression (int8 is the other half).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from knowcache.models.xnn_ops import global_max


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 1
    stem_width: int = 32
    stem_stride: int = 2
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1)
    strides: tuple[int, ...] = (1, 2, 2)
    dropout: float = 0.1
    block: str = "basic"     # "basic" (residual, strided), "conv_pool" (ConvPoolBlock) or
                             # "airbench" (AirbenchBlock, whitening stem, max-pooled head)

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


class NormNoScale(nn.BatchNorm2d):
    """BatchNorm with its scale frozen at 1 (only the shift learns) and airbench's
    running-statistics momentum: a convolution followed by a scale-free norm is
    scale-invariant, so weight decay on it sets the effective learning rate."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad = False


class AirbenchBlock(nn.Module):
    """airbench's (Jordan, "94% on CIFAR-10 in 3.29 seconds", 2024) conv group:
    conv, max-pool, norm, GELU, conv, norm, GELU; the convolutions start as
    identities on their first channels (Dirac), the norms have no scale."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"an airbench block downsamples by 1 or 2, not {stride}")
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.pool = nn.MaxPool2d(2) if stride == 2 else nn.Identity()
        self.bn1 = NormNoScale(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = NormNoScale(cout)
        self.act = nn.GELU()
        for conv in (self.conv1, self.conv2):
            nn.init.dirac_(conv.weight.data[:conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(y)))


class Whitening(nn.Conv2d):
    """airbench's stem: a 2x2 convolution (no padding) whose 2 C k^2 filters are the
    eigenvectors of the training images' 2x2 patch covariance, each scaled to unit
    variance, and their negatives. Set by ``fit_to`` from training inputs and
    frozen; only the bias learns (``build.training``, the first epochs)."""

    KERNEL = 2

    def __init__(self, channels: int):
        super().__init__(channels, 2 * channels * self.KERNEL ** 2, self.KERNEL, bias=True)
        self.weight.requires_grad = False
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit_to(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitens the 2x2 patches of ``x`` (N, C, H, W), already normalized."""
        k, c = self.KERNEL, x.shape[1]
        patches = x.float().unfold(2, k, 1).unfold(3, k, 1)          # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        cov = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(cov.double())
        filters = (vectors.T / torch.sqrt(values.clamp(min=0) + eps).unsqueeze(1)).float()
        filters = filters.flip(0).reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]))


class GlobalMaxPool(nn.Module):
    """The largest value of each channel (``xnn_ops.global_max``), as a layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_max(x)


BLOCKS = {"basic": BasicBlock, "conv_pool": ConvPoolBlock, "airbench": AirbenchBlock}
# airbench scales its logits by 1/9; a plain linear layer initialized 9x smaller and
# trained at 1/81 of the learning rate (build.training) follows the same path.
AIRBENCH_LOGIT_SCALE = 1 / 9


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
        airbench = c.block == "airbench"
        if airbench:        # the stem's width follows from the channels: stem_width is unused
            self.stem = nn.Sequential(Whitening(c.in_channels), nn.GELU())
            cin = self.stem[0].out_channels
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(c.in_channels, c.stem_width, 3, c.stem_stride, 1, bias=False),
                nn.BatchNorm2d(c.stem_width), nn.ReLU())
            cin = c.stem_width
        layers: list[nn.Module] = []
        for width, n, stride in zip(c.widths, c.blocks, c.strides):
            for i in range(n):
                layers.append(block(cin, width, stride if i == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.pool = GlobalMaxPool() if airbench else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Identity() if airbench else nn.Dropout(c.dropout)
        self.fc = nn.Linear(cin, classes)
        if airbench:
            with torch.no_grad():
                self.fc.weight.mul_(AIRBENCH_LOGIT_SCALE)
                self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


