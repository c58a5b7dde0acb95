"""Cache heads on stage outputs (GATI's learned caches, BranchyNet's exits).

A head pools the stage's activation to a small grid (the *compact feature*:
what the cloud records to retrain the head, and what Freeze Inference's
approximate cache looks up), standardizes it, and feeds a two-layer MLP
*predictor* distilled from the full model. A *selector* MLP reads the
predictor's hidden layer and probabilities and predicts whether the
predictor agrees with the full model (GATI's selector).

Exported as the method ``exit_i``: activation -> (predictor logits,
selector logit, compact feature).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


SELECTOR_BOUND = 16.0


@dataclass(frozen=True)
class HeadConfig:
    grid: tuple[int, int] = (2, 2)   # pooled (height, width)
    hidden: int = 256
    selector_hidden: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


class ExitHead(nn.Module):
    def __init__(self, channels: int, classes: int, config: HeadConfig = HeadConfig()):
        super().__init__()
        self.config = config
        self.grid = tuple(config.grid)
        dim = channels * self.grid[0] * self.grid[1]
        self.feature_dim = dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))
        self.hidden = nn.Linear(dim, config.hidden)
        self.out = nn.Linear(config.hidden, classes)
        self.selector = nn.Sequential(nn.Linear(config.hidden + classes, config.selector_hidden),
                                      nn.ReLU(), nn.Linear(config.selector_hidden, 1))

    def feature(self, activation: torch.Tensor) -> torch.Tensor:
        """The compact feature: average-pooled to the grid, flattened."""
        return F.adaptive_avg_pool2d(activation, self.grid).flatten(1)

    def from_feature(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.hidden((feature - self.mean) * self.inv_std))
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


def grid_for(activation_shape: tuple[int, ...]) -> tuple[int, int]:
    """Early, wide activations keep a 4x4 grid (enough layout for a shallow
    feature to be told apart); deeper ones 2x2."""
    _, channels, h, w = activation_shape
    return (4, 4) if channels <= 64 and min(h, w) >= 8 else (2, 2)
