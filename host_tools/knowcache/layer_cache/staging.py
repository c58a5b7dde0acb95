"""Cutting a knowcache network into stages.

For the ResNet family (the vision task): stage 0 is the input handling
(pixel normalization) and the stem, then one stage per residual block; the
head is global pooling and the classifier.

For the kws full model (``KwsNet``): stage 0 is the log-mel front end and the
first convolutions of the speech_embedding trunk, the next stages the rest of
the trunk (cut after its max-pools, ``KWS_CUTS``), the last trunk stage ends
with the embeddings as a (B, 96, windows, 1) sequence; the final stage runs
the spectrogram branch, which starts from the waveform, so it also reads the
model input (its method takes it as a second argument) and passes the
embeddings and the branch's pooled features on packed in one row; the head
unpacks them and runs the keyword head (ensemble). The exits sit on the trunk
(sequence heads: the activation pooled to half its time steps x 2 mel cells,
read as a sequence over time) and on the embeddings (the full model's own
keyword head without the branch, ``heads.ModelHeadExit``).

Running the stages in order and then the head is exactly the network's
forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from knowcache.build import flops
from knowcache.layer_cache.distill import DistillConfig
from knowcache.layer_cache.heads import HeadConfig, grid_for
from knowcache.models.nets import KwsNet, VisionNet
from knowcache.models.speech_embedding import EMBEDDING_DIM
from knowcache.models.xnn_ops import with_channel

# kws: the trunk is cut after these convolutions (each ends in a max-pool).
KWS_CUTS = (2, 6, 10)
# A trunk exit reads its activation as a sequence: time steps pooled in pairs,
# mel bands pooled to 2 (docs/layer-caching.md).
KWS_TRUNK_HEAD = HeadConfig(kind="sequence", hidden=128)


@dataclass(frozen=True)
class ExitTraining:
    """How ``knowcache export --staged`` distills a network's cache heads: on
    ``samples`` training inputs (None: all of them), each also as
    ``augmented_copies`` copies through the training augmentation
    (``training.augment``), with the full model's answers on exactly those."""
    samples: int | None
    augmented_copies: int
    distill: DistillConfig


# kws: as staged.v17 was built. Image tasks: every training image and one
# shifted/mirrored copy, 5 annealed epochs; on CIFAR-10 this raised the share
# exit 1 answers at 99% agreement from 18.5% to 38.5% (docs/layer-caching.md).
KWS_EXIT_TRAINING = ExitTraining(samples=20000, augmented_copies=0, distill=DistillConfig())
IMAGE_EXIT_TRAINING = ExitTraining(samples=None, augmented_copies=1,
                                   distill=DistillConfig(epochs=5, weight_decay=5e-4,
                                                         schedule="one_cycle"))


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


class _KwsTrunk(nn.Module):
    """Convolutions ``start`` .. ``stop`` - 1 of the speech_embedding trunk; the first
    part starts from the waveform (front end included), the last ends with the
    embeddings as (B, 96, windows, 1)."""

    def __init__(self, net: KwsNet, start: int, stop: int | None):
        super().__init__()
        self.net, self.start, self.stop = net, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trunk = self.net.backbone.trunk
        if self.start == 0:
            x = with_channel(self.net.features(x))
        x = trunk.trunk(x, self.start, self.stop)
        return trunk.embedding_map(x) if self.stop is None else x


class _KwsBranch(nn.Module):
    """(embeddings (B, 96, W, 1), waveform) -> (B, 96 W + side): the embeddings and
    the spectrogram branch's pooled features, packed in one row."""
    reads_input = True

    def __init__(self, net: KwsNet):
        super().__init__()
        self.net = net

    def forward(self, e: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
        parts = [e.flatten(1)]
        if self.net.spectrogram is not None:
            parts.append(self.net.spectrogram.pooled(wave))
        return torch.cat(parts, 1)


class _KwsHead(nn.Module):
    def __init__(self, net: KwsNet, windows: int):
        super().__init__()
        self.head, self.windows = net.backbone.head, windows
        self.side = net.spectrogram is not None

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        n = self.windows * EMBEDDING_DIM
        e = packed[:, :n].reshape(packed.shape[0], EMBEDDING_DIM, self.windows).transpose(1, 2)
        return self.head(e, packed[:, n:] if self.side else None)


def reads_input(module: nn.Module) -> bool:
    """Whether a stage also takes the model input (as its second argument)."""
    return bool(getattr(module, "reads_input", False))


@dataclass
class Stages:
    modules: list[nn.Module]      # stage_0 .. stage_n
    head: nn.Module
    input_example: torch.Tensor   # one input, batch 1
    activation_shapes: list[tuple[int, ...]]   # each stage's output, batch 1
    stage_flops: list[int]
    head_flops: int
    head_configs: list[HeadConfig]   # the cache head proposed for each exit (stages 0..n-1)
    model_head: nn.Module | None = None   # kws: the full model's keyword head (model_head exits)
    exit_training: ExitTraining = IMAGE_EXIT_TRAINING
    # The stages and the head lowered (an ExecuTorch EdgeProgramManager), kept by
    # program.lower: a retrain changes only the exits, so later programs lower
    # only those. The stages' weights must not change once lowered.
    lowered: object = field(default=None, compare=False, repr=False)

    @property
    def total_flops(self) -> int:
        return sum(self.stage_flops) + self.head_flops

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every stage's output and the final logits."""
        outs = []
        with torch.no_grad():
            act = x
            for m in self.modules:
                act = m(act, x) if reads_input(m) else m(act)
                outs.append(act)
            return outs, self.head(act)


def split(net: nn.Module, input_example: torch.Tensor) -> Stages:
    net = net.eval()
    if isinstance(net, KwsNet):
        bounds = [0, *(c + 1 for c in KWS_CUTS), None]
        modules: list[nn.Module] = [_KwsTrunk(net, a, b) for a, b in zip(bounds, bounds[1:])]
        modules.append(_KwsBranch(net))
    elif isinstance(net, VisionNet):
        modules = [_Stem(net), *net.backbone.stages]
    else:
        raise TypeError(f"cannot cut a {type(net).__name__} into stages; expected a knowcache "
                        "VisionNet or KwsNet")
    shapes, costs = [], []
    x = input_example
    with torch.no_grad():
        for m in modules:
            args = (x, input_example) if reads_input(m) else (x,)
            costs.append(flops.count(m, *args))
            x = m(*args)
            shapes.append(tuple(x.shape))
    if isinstance(net, KwsNet):
        head = _KwsHead(net, shapes[-2][2])
        configs = [replace(KWS_TRUNK_HEAD, grid=(-(-s[2] // 2), min(2, s[3])))
                   for s in shapes[:len(KWS_CUTS)]]
        configs.append(HeadConfig(kind="model_head"))
        model_head = net.backbone.head
        training = KWS_EXIT_TRAINING
    else:
        head = _Head(net)
        configs = [HeadConfig(grid=grid_for(s)) for s in shapes[:-1]]
        model_head = None
        training = IMAGE_EXIT_TRAINING
    head_flops = flops.count(head, x)
    return Stages(modules, head, input_example, shapes, costs, head_flops, configs,
                  model_head=model_head, exit_training=training)
