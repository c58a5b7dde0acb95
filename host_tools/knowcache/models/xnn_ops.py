"""Common tensor operations written the way XNNPACK lowers them.

ExecuTorch's XNNPACK partitioner delegates what it has kernels for; anything
else (``amax``, ``mean`` over a stack, ``unsqueeze`` of a leading dimension,
strided slices, ``log10``) splits the program into several delegate calls with
portable kernels between them, which are slower on every device and make each
lowering take longer. These give the same numbers with XNNPACK ops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def global_max(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1): each channel's largest value, as a max-pool
    over the whole map (exported programs have a fixed input size)."""
    return nn.functional.max_pool2d(x, kernel_size=tuple(x.shape[2:]))


class GridMean(nn.Module):
    """(B, C, H, W) -> (B, C, gh, gw): ``adaptive_avg_pool2d`` to the grid, as ops
    XNNPACK runs (ExecuTorch's portable ``adaptive_avg_pool2d`` is not delegated:
    a cache head on a 256 x 8 x 8 activation ran 1.4x slower with it). Where the
    grid divides the map, an average pool with one cell per window; otherwise,
    for the map size ``spatial`` given here, each cell's mean as a linear map of
    the flattened map (adaptive pooling's windows: rows floor(i H / gh) to
    ceil((i + 1) H / gh), and so for columns), its weights a buffer so that
    XNNPACK holds them as constants. Any other map: adaptive pooling itself."""

    def __init__(self, grid: tuple[int, int], spatial: tuple[int, int] | None = None):
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.spatial = None if spatial is None else (int(spatial[0]), int(spatial[1]))
        if self.spatial is not None and not self._divides(self.spatial):
            self.register_buffer("weights", torch.from_numpy(
                _pooling_map(*self.spatial, *self.grid)), persistent=False)

    def _divides(self, spatial: tuple[int, int]) -> bool:
        return spatial[0] % self.grid[0] == 0 and spatial[1] % self.grid[1] == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gh, gw = self.grid
        if self._divides((h, w)):
            return nn.functional.avg_pool2d(x, kernel_size=(h // gh, w // gw))
        if (h, w) == self.spatial:
            return nn.functional.linear(x.reshape(b * c, h * w),
                                        self.weights.to(x.dtype)).reshape(b, c, gh, gw)
        return nn.functional.adaptive_avg_pool2d(x, self.grid)


def _pooling_map(h: int, w: int, gh: int, gw: int) -> np.ndarray:
    """(gh gw, h w): row (i, j) averages adaptive pooling's window (i, j)."""
    def windows(n: int, cells: int) -> np.ndarray:
        m = np.zeros((cells, n), np.float32)
        for i in range(cells):
            lo, hi = (i * n) // cells, -((-(i + 1) * n) // cells)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m
    return np.kron(windows(h, gh), windows(w, gw))


def max_over_time(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C): the largest value along the last axis."""
    b, c, t = x.shape
    return global_max(x.reshape(b, c, t, 1)).reshape(b, c)


def mean_of(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The element-wise mean of same-shaped tensors, as adds and one scale."""
    return sum(tensors[1:], tensors[0]) * (1.0 / len(tensors))


def with_channel(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, 1, ...): a channel axis of one, as a reshape."""
    return x.reshape(x.shape[0], 1, *x.shape[1:])
