"""FLOPs of a network or one of its pieces, counted by PyTorch's FlopCounterMode
(2 per multiply-accumulate, convolutions and matmuls; element-wise work is not
counted, as in the papers' figures)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(*inputs)
    return int(counter.get_total_flops())


def program_flops(task: str, config, classes: int, input_shape) -> int:
    """FLOPs of one query through a knowcache program (front end included)."""
    from knowcache.models import build_net

    return count(build_net(task, config, classes), torch.zeros(1, *list(input_shape)[1:]))
