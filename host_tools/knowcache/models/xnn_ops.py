"""Common tensor operations written the way XNNPACK lowers them.

ExecuTorch's XNNPACK partitioner delegates what it has kernels for; anything
else (``amax``, ``mean`` over a stack, ``unsqueeze`` of a leading dimension,
strided slices, ``log10``) splits the program into several delegate calls with
portable kernels between them, which are slower on every device and make each
lowering take longer. These give the same numbers with XNNPACK ops.
"""

from __future__ import annotations

import torch
from torch import nn


def global_max(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1): each channel's largest value, as a max-pool
    over the whole map (exported programs have a fixed input size)."""
    return nn.functional.max_pool2d(x, kernel_size=tuple(x.shape[2:]))


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
