"""A factorized DFT small enough to live inside every exported kws program.

A dense 512-point DFT convolution would carry 512 x 514 weights (1 MB in
float32), more than a whole device model may weigh. The DFT is computed
instead as Cooley-Tukey with N = N1 * N2 = 16 * 32: an N1-point DFT over
strided samples, twiddle factors, then an N2-point DFT, all small matrix
products (3.6k constants). It equals ``torch.fft.rfft`` to float32 rounding
(tests/test_models.py); `speech_embedding.GoogleMel` builds on it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class FactorizedDFT(nn.Module):
    """Power spectrum of (B, T, N) frames, N = n1 * n2, by a factorized DFT.

    Output (B, T, N) in the flat (k1, k2) layout: bin k = k1 + n1 * k2 sits at
    position k1 * n2 + k2 (``flat_bins`` maps bins to positions).
    """

    def __init__(self, n1: int, n2: int):
        super().__init__()
        self.n1, self.n2, self.n = n1, n2, n1 * n2
        k1 = torch.arange(n1, dtype=torch.float64)
        n2i = torch.arange(n2, dtype=torch.float64)
        # Stage 1: N1-point DFT along n1; rows k1, columns n1.
        a1 = 2 * math.pi * torch.outer(k1, k1) / n1
        self.register_buffer("c1", torch.cos(a1).float(), persistent=False)
        self.register_buffer("s1", (-torch.sin(a1)).float(), persistent=False)
        # Twiddles W_N^(k1 * n2), laid out (k1, n2).
        at = 2 * math.pi * torch.outer(k1, n2i) / self.n
        self.register_buffer("tr", torch.cos(at).float(), persistent=False)
        self.register_buffer("ti", (-torch.sin(at)).float(), persistent=False)
        # Stage 2: N2-point DFT along n2; rows n2, columns k2.
        a2 = 2 * math.pi * torch.outer(n2i, n2i) / n2
        self.register_buffer("c2", torch.cos(a2).float(), persistent=False)
        self.register_buffer("s2", (-torch.sin(a2)).float(), persistent=False)

    def bins(self) -> torch.Tensor:
        """The DFT bin index at each flat position (float64)."""
        k1 = torch.arange(self.n1, dtype=torch.float64)
        k2 = torch.arange(self.n2, dtype=torch.float64)
        return (k1.view(-1, 1) + self.n1 * k2.view(1, -1)).reshape(-1)

    def flat_bins(self, count: int) -> np.ndarray:
        """Flat positions of bins 0 .. count-1, in bin order."""
        return np.array([(k % self.n1) * self.n2 + k // self.n1 for k in range(count)])

    def power(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[0], frames.shape[1]
        xs = frames.reshape(b, t, self.n1, self.n2)             # x[n1 * N2 + n2]
        yr = torch.matmul(self.c1, xs)                            # (B, T, k1, n2)
        yi = torch.matmul(self.s1, xs)
        zr = yr * self.tr - yi * self.ti
        zi = yr * self.ti + yi * self.tr
        xr = torch.matmul(zr, self.c2) - torch.matmul(zi, self.s2)   # (B, T, k1, k2)
        xi = torch.matmul(zr, self.s2) + torch.matmul(zi, self.c2)
        return (xr * xr + xi * xi).reshape(b, t, self.n)
