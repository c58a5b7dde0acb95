"""Programs for the runtime overhead benchmark (`make bench-overhead`).

`cnn1ms.pte` is a 3-layer 24-channel CNN on a 3x32x32 input, which takes about
1 ms per call on one core of the development machine: the size at which the
foundation issue states its overhead target (< 2%).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from knowcache.build import lower


def cnn1ms() -> nn.Module:
    torch.manual_seed(0)
    width = 24
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    pte = lower.lower_to_pte(cnn1ms(), (torch.zeros(1, 3, 32, 32),))
    name = lower.save_program(args.out, "cnn1ms", pte)
    print(args.out / name)


if __name__ == "__main__":
    main()
