"""Cutting a knowcache network into stages.

For the ResNet family (the vision task): stage 0 is the input handling
(pixel normalization) and the stem, then one stage per residual block; the
head is global pooling and the classifier. Running the stages in order and
then the head is exactly the network's forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from knowcache.build import flops
from knowcache.models.nets import KwsNet, VisionNet


class _Stem(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.backbone.stem(self.net.features(x))


class _Head(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.pool, self.fc = net.backbone.pool, net.backbone.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


@dataclass
class Stages:
    modules: list[nn.Module]      # stage_0 .. stage_n
    head: nn.Module
    input_example: torch.Tensor   # one input, batch 1
    activation_shapes: list[tuple[int, ...]]   # each stage's output, batch 1
    stage_flops: list[int]
    head_flops: int

    @property
    def total_flops(self) -> int:
        return sum(self.stage_flops) + self.head_flops

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every stage's output and the final logits."""
        outs = []
        with torch.no_grad():
            for m in self.modules:
                x = m(x)
                outs.append(x)
            return outs, self.head(x)


def split(net: nn.Module, input_example: torch.Tensor) -> Stages:
    if isinstance(net, KwsNet):
        raise ValueError("layer caching cannot cut the kws model into stages yet: its speech-"
                         "embedding and spectrogram branches run side by side, and a staged "
                         "program passes one activation from stage to stage")
    if not isinstance(net, VisionNet):
        raise TypeError(f"cannot cut a {type(net).__name__} into stages; expected a knowcache "
                        "VisionNet")
    net = net.eval()
    modules: list[nn.Module] = [_Stem(net), *net.backbone.stages]
    head = _Head(net)
    shapes, costs = [], []
    x = input_example
    with torch.no_grad():
        for m in modules:
            costs.append(flops.count(m, x))
            x = m(x)
            shapes.append(tuple(x.shape))
        head_flops = flops.count(head, x)
    return Stages(modules, head, input_example, shapes, costs, head_flops)
