"""Cache heads on stage outputs (GATI's learned caches, BranchyNet's exits).

A head pools the stage's activation to a small grid (the *compact feature*:
what the cloud records to retrain the head, and what Freeze Inference's
approximate cache looks up), standardizes it, and feeds a two-layer MLP
*predictor* distilled from the full model. A *selector* MLP reads the
predictor's hidden layer and probabilities and predicts whether the
predictor agrees with the full model (GATI's selector).

A *sequence* head (kws, on the speech_embedding trunk) reads an activation as
a sequence over time, as the full model's keyword head reads the embeddings:
its compact feature is the activation average-pooled to a (time, frequency)
grid (a (B, C, T, 1) sequence is kept whole), each time step's C x F values
are the channels of two 1-D convolutions over time, then a max over time. On
the trunk's activations it agrees with the full model far more often than a
grid head does (real held-out voices, after the trunk's second and third
cuts: 92% and 94% against 75% and 85%; docs/layer-caching.md).

A *model head* (kws, on the embeddings) is the full model's own keyword head
(its ensemble), frozen, with the spectrogram branch's features it cannot have
yet set to zero: the head was trained with that branch dropped for half of
its samples, so it answers without it (on real voices it agrees with the full
model on 97.8% of held-out clips, a distilled sequence head on 94%). Only its
selector learns.

Exported as the method ``exit_i``: activation -> (predictor logits,
selector logit, compact feature).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from knowcache.models.xnn_ops import GridMean, max_over_time, mean_of


SELECTOR_BOUND = 16.0


@dataclass(frozen=True)
class HeadConfig:
    grid: tuple[int, int] = (2, 2)   # pooled (height, width); a sequence head keeps (T, 1)
    hidden: int = 256
    selector_hidden: int = 64
    kind: str = "grid"               # grid | sequence | model_head

    def to_dict(self) -> dict:
        return asdict(self)


class ExitHead(nn.Module):
    # Whether distillation trains the predictor (else only the selector learns).
    trainable_predictor = True

    def __init__(self, channels: int, classes: int, config: HeadConfig = HeadConfig(),
                 spatial: tuple[int, int] | None = None):
        super().__init__()
        self.config = config
        self.grid = tuple(config.grid)
        # the activation's (height, width), where known: pooling it to the grid
        # then runs inside XNNPACK whether or not the grid divides it
        self.pool = GridMean(self.grid, spatial)
        dim = channels * self.grid[0] * self.grid[1]
        self.feature_dim = dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))
        self.hidden = self._encoder(channels, dim, config)
        self.out = nn.Linear(config.hidden, classes)
        self.selector = nn.Sequential(nn.Linear(config.hidden + classes, config.selector_hidden),
                                      nn.ReLU(), nn.Linear(config.selector_hidden, 1))

    @staticmethod
    def _encoder(channels: int, dim: int, config: HeadConfig) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, config.hidden), nn.ReLU())

    def feature(self, activation: torch.Tensor) -> torch.Tensor:
        """The compact feature: average-pooled to the grid, flattened."""
        return self.pool(activation).flatten(1)

    def encode(self, feature: torch.Tensor) -> torch.Tensor:
        """The predictor's hidden layer (what the selector reads)."""
        return self.hidden((feature - self.mean) * self.inv_std)

    def from_feature(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(feature)
        logits = self.out(h)
        raw = self.selector(torch.cat([h, F.softmax(logits, 1)], 1))
        # Bounded to +-16 so the sigmoid stays resolvable in float64 and the
        # calibrated thresholds keep their order (a saturated selector would
        # put every confident input at exactly 1.0).
        return logits, SELECTOR_BOUND * torch.tanh(raw / SELECTOR_BOUND)

    def forward(self, activation: torch.Tensor):
        f = self.feature(activation)
        logits, selector = self.from_feature(f)
        return logits, selector, f

    def set_standardization(self, features: torch.Tensor) -> None:
        with torch.no_grad():
            self.mean.copy_(features.mean(0))
            self.inv_std.copy_(1.0 / (features.std(0) + 1e-3))


class SequenceExitHead(ExitHead):
    """On a (B, C, T, F) activation read as a sequence over T: the feature is the
    activation average-pooled to the (time, frequency) grid (the whole sequence
    when it is already (T, 1)); the predictor reads each time step's C x F
    values as channels, two 1-D convolutions over time then a max over time."""

    def __init__(self, channels: int, classes: int, config: HeadConfig,
                 spatial: tuple[int, int] | None = None):
        self.channels = channels
        super().__init__(channels, classes, config, spatial)

    @staticmethod
    def _encoder(channels: int, dim: int, config: HeadConfig) -> nn.Module:
        h = config.hidden
        return nn.Sequential(nn.Conv1d(channels * config.grid[1], h, 3, padding=1), nn.ReLU(),
                             nn.Conv1d(h, h, 3, padding=1), nn.ReLU())

    def feature(self, activation: torch.Tensor) -> torch.Tensor:
        if tuple(activation.shape[2:]) == self.grid:
            return activation.flatten(1)
        return self.pool(activation).flatten(1)

    def _sequence(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C T F) -> (B, C F, T)."""
        t, f = self.grid
        if f == 1:
            return x.reshape(x.shape[0], self.channels, t)
        x = x.reshape(x.shape[0], self.channels, t, f).permute(0, 1, 3, 2)
        return x.reshape(x.shape[0], self.channels * f, t)

    def encode(self, feature: torch.Tensor) -> torch.Tensor:
        return max_over_time(self.hidden(self._sequence((feature - self.mean) * self.inv_std)))


class _MemberHidden(nn.Module):
    """Each keyword head's convolutions and max over time, side by side."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([max_over_time(m.relu(m.conv2(m.relu(m.conv1(x)))))
                          for m in self.members], 1)


class _MemberLogits(nn.Linear):
    """The heads' classifiers on their hidden parts, branch features zero, averaged:
    one linear layer over all members' hidden parts (each member's weights for its
    own part, divided by their number; the mean of their biases), which XNNPACK
    runs as one matmul with constant weights (slices of a weight are not
    constants to it: three member classifiers ran as portable ``addmm``)."""

    def __init__(self, members: list[nn.Module]):
        width = members[0].conv2.out_channels
        classes = members[0].fc.out_features
        super().__init__(width * len(members), classes)
        with torch.no_grad():
            self.weight.copy_(torch.cat([m.fc.weight[:, :width] for m in members], 1)
                              / len(members))
            self.bias.copy_(mean_of([m.fc.bias for m in members]))


class ModelHeadExit(SequenceExitHead):
    """The full model's keyword head (an ``EmbeddingHead`` or ``HeadEnsemble``, copied,
    frozen) on the embedding sequence, without the branch it reads after them."""

    trainable_predictor = False

    def __init__(self, channels: int, classes: int, config: HeadConfig, model_head: nn.Module):
        members = [copy.deepcopy(m) for m in getattr(model_head, "members", [model_head])]
        if members[0].conv1.in_channels != channels or members[0].fc.out_features != classes:
            raise ValueError(f"the model's keyword head reads {members[0].conv1.in_channels} "
                             f"channels into {members[0].fc.out_features} classes; this exit "
                             f"has {channels} and {classes}")
        self._members = members
        width = members[0].conv2.out_channels * len(members)
        super().__init__(channels, classes, replace(config, hidden=width))
        self.out = _MemberLogits(members)
        for p in [*self.hidden.parameters(), *self.out.parameters()]:
            p.requires_grad_(False)

    def _encoder(self, channels: int, dim: int, config: HeadConfig) -> nn.Module:  # type: ignore[override]
        return _MemberHidden(self._members)

    def encode(self, feature: torch.Tensor) -> torch.Tensor:
        # the head reads the embeddings as they are: no standardization
        return self.hidden(self._sequence(feature))

    def set_standardization(self, features: torch.Tensor) -> None:
        pass


def make(activation_shape: tuple[int, ...], classes: int, config: HeadConfig,
         model_head: nn.Module | None = None) -> ExitHead:
    """A cache head for a stage output of this shape (batch 1); ``model_head``: the
    full model's keyword head, for a ``model_head`` exit."""
    _, channels, h, w = activation_shape
    if config.kind == "model_head":
        if w != 1:
            raise ValueError(f"a model_head exit needs a (B, C, T, 1) activation, got "
                             f"{tuple(activation_shape)}")
        if model_head is None:
            raise ValueError("a model_head exit needs the full model's keyword head")
        return ModelHeadExit(channels, classes, replace(config, grid=(h, 1)), model_head)
    if config.kind == "sequence":
        # a (T, 1) sequence is read whole; a wider activation is pooled to the grid
        grid = (h, 1) if w == 1 else tuple(config.grid)
        if grid[0] > h or grid[1] > w:
            raise ValueError(f"a sequence head's grid {grid} is finer than its activation "
                             f"{tuple(activation_shape)}")
        return SequenceExitHead(channels, classes, replace(config, grid=grid), (h, w))
    if config.kind != "grid":
        raise ValueError(f"unknown cache head kind {config.kind!r}; expected grid, sequence "
                         "or model_head")
    return ExitHead(channels, classes, config, (h, w))


def grid_for(activation_shape: tuple[int, ...]) -> tuple[int, int]:
    """Early, wide activations keep a 4x4 grid (enough layout for a shallow
    feature to be told apart); deeper ones 2x2."""
    _, channels, h, w = activation_shape
    return (4, 4) if channels <= 64 and min(h, w) >= 8 else (2, 2)
