"""A factorized DFT small enough to live inside every exported kws program.

A dense 512-point DFT convolution would carry 512 x 514 weights (1 MB in
float32), more than a whole device model may weigh. The DFT is computed
instead as Cooley-Tukey with N = N1 * N2 = 16 * 32: an N1-point DFT over
strided samples, twiddle factors, then an N2-point DFT, all small matrix
products (3.6k constants). The frames are real, so only bins 0..N/2 are
wanted: the second DFT computes its outputs k2 = 0..N2/2 only, which hold
every bin k = k1 + N1 k2 <= N/2 (and a few above, which callers weigh zero),
about 40% fewer operations than the whole spectrum. Each stage's real and
imaginary parts come from one matrix product. It equals ``torch.fft.rfft`` to
float32 rounding (tests/test_models.py); `speech_embedding.GoogleMel` and
`spectrogram.LogMel` build on it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class FactorizedDFT(nn.Module):
    """Power spectrum of (B, T, N) real frames, N = n1 * n2, by a factorized DFT.

    Output (B, T, n1 * (n2 // 2 + 1)) in the flat (k1, k2) layout, k2 <= n2 / 2:
    bin k = k1 + n1 * k2 sits at position k1 * (n2 // 2 + 1) + k2 (``bins`` gives
    each position's bin, ``flat_bins`` the position of each bin up to N/2).
    """

    def __init__(self, n1: int, n2: int):
        super().__init__()
        if n2 % 2:
            raise ValueError("n2 must be even")
        self.n1, self.n2, self.n = n1, n2, n1 * n2
        self.k2 = n2 // 2 + 1                      # outputs of the second DFT kept
        k1 = torch.arange(n1, dtype=torch.float64)
        n2i = torch.arange(n2, dtype=torch.float64)
        # Stage 1: N1-point DFT along n1 of real samples; rows (re k1, im k1), columns n1.
        a1 = 2 * math.pi * torch.outer(k1, k1) / n1
        self.register_buffer("stage1", torch.cat([torch.cos(a1), -torch.sin(a1)]).float(),
                             persistent=False)
        # Twiddles W_N^(k1 * n2), laid out (k1, n2).
        at = 2 * math.pi * torch.outer(k1, n2i) / self.n
        self.register_buffer("tr", torch.cos(at).float(), persistent=False)
        self.register_buffer("ti", (-torch.sin(at)).float(), persistent=False)
        # Stage 2: N2-point DFT along n2, outputs k2 = 0..n2/2: [zr zi] @ [[c, s], [-s, c]]
        # gives [xr xi] in one product.
        a2 = 2 * math.pi * torch.outer(n2i, torch.arange(self.k2, dtype=torch.float64)) / n2
        c2, s2 = torch.cos(a2), -torch.sin(a2)
        self.register_buffer("stage2", torch.cat([torch.cat([c2, s2], 1),
                                                  torch.cat([-s2, c2], 1)]).float(),
                             persistent=False)

    @property
    def positions(self) -> int:
        """Length of the flat output."""
        return self.n1 * self.k2

    def bins(self) -> torch.Tensor:
        """The DFT bin index at each flat position (float64)."""
        k1 = torch.arange(self.n1, dtype=torch.float64)
        k2 = torch.arange(self.k2, dtype=torch.float64)
        return (k1.view(-1, 1) + self.n1 * k2.view(1, -1)).reshape(-1)

    def flat_bins(self, count: int) -> np.ndarray:
        """Flat positions of bins 0 .. count-1 (at most N/2 + 1), in bin order."""
        if count > self.n // 2 + 1:
            raise ValueError(f"only bins 0..{self.n // 2} are computed")
        return np.array([(k % self.n1) * self.k2 + k // self.n1 for k in range(count)])

    def power(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[0], frames.shape[1]
        xs = frames.reshape(b, t, self.n1, self.n2)              # x[n1 * N2 + n2]
        # (B, T, 2 n1, n2), as a linear layer on the n1 axis (XNNPACK's fully
        # connected; a constant matrix times a batch would be expanded outside it)
        y = nn.functional.linear(xs.transpose(2, 3), self.stage1).transpose(2, 3)
        yr, yi = y[:, :, :self.n1], y[:, :, self.n1:]
        z = torch.cat([yr * self.tr - yi * self.ti, yr * self.ti + yi * self.tr], 3)
        out = torch.matmul(z, self.stage2)                       # (B, T, k1, 2 k2)
        xr, xi = out[..., :self.k2], out[..., self.k2:]
        return (xr * xr + xi * xi).reshape(b, t, self.positions)
