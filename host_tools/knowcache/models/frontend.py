"""Log-mel audio front end that lives inside every exported kws program.

The device feeds raw 16 kHz waveform; the program frames it, windows it,
takes a DFT, a mel filterbank and a log, exactly as the host did in training.

Sizes matter here: a cached keyword model is a few tens of KB, so the front
end's constants must be tiny. A dense DFT convolution of 512 points would
carry 512 x 514 weights (1 MB in float32), more than twenty cached models.
We therefore compute the DFT as a *factorized* fixed convolution
(Cooley-Tukey, N = N1 * N2 = 16 * 32): an N1-point DFT over strided samples,
twiddle factors, then an N2-point DFT, all as small matrix products
(3.6k constants). The mel filterbank is triangles in mel space built in the
graph from the bins' mel positions and the band centres (300 constants),
rather than a stored 257 x 40 matrix. The result equals ``torch.stft`` power
followed by the same filterbank to float32 rounding (see tests).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


class LogMel(nn.Module):
    """(B, samples) float waveform in [-1, 1] -> (B, 1, n_mels, frames) log-mel."""

    def __init__(self, sample_rate: int = 16000, samples: int = 16000, win_length: int = 480,
                 hop_length: int = 160, n1: int = 16, n2: int = 32, n_mels: int = 40,
                 f_min: float = 20.0, f_max: float = 7600.0, eps: float = 1e-6):
        super().__init__()
        n_fft = n1 * n2
        if win_length % hop_length or win_length > n_fft:
            raise ValueError("win_length must be a multiple of hop_length and at most n1*n2")
        if samples % hop_length:
            raise ValueError("samples must be a multiple of hop_length")
        self.sample_rate, self.samples = sample_rate, samples
        self.win_length, self.hop_length = win_length, hop_length
        self.n1, self.n2, self.n_fft, self.n_mels, self.eps = n1, n2, n_fft, n_mels, eps
        self.hops_per_window = win_length // hop_length
        self.frames = samples // hop_length - self.hops_per_window + 1

        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float().view(1, 1, win_length), persistent=False)
        k1 = torch.arange(n1, dtype=torch.float64)
        n2i = torch.arange(n2, dtype=torch.float64)
        # Stage 1: N1-point DFT along n1; rows k1, columns n1.
        a1 = 2 * math.pi * torch.outer(k1, k1) / n1
        self.register_buffer("c1", torch.cos(a1).float(), persistent=False)
        self.register_buffer("s1", (-torch.sin(a1)).float(), persistent=False)
        # Twiddles W_N^(k1 * n2), laid out (k1, n2).
        at = 2 * math.pi * torch.outer(k1, n2i) / n_fft
        self.register_buffer("tr", torch.cos(at).float(), persistent=False)
        self.register_buffer("ti", (-torch.sin(at)).float(), persistent=False)
        # Stage 2: N2-point DFT along n2; rows n2, columns k2.
        a2 = 2 * math.pi * torch.outer(n2i, n2i) / n2
        self.register_buffer("c2", torch.cos(a2).float(), persistent=False)
        self.register_buffer("s2", (-torch.sin(a2)).float(), persistent=False)
        # Bin k = k1 + N1 * k2 sits at flat position k1 * N2 + k2 after stage 2;
        # its mel position, and a mask that keeps bins 0..N/2 only.
        k = (k1.view(-1, 1) + n1 * n2i.view(1, -1)).reshape(-1)
        freq = k * sample_rate / n_fft
        keep = (k <= n_fft // 2).double()
        mel_bins = hz_to_mel(freq)
        lo, hi = hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max))
        centres = torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64)[1:-1]
        self.mel_step = float(centres[1] - centres[0])
        self.register_buffer("bin_mel", mel_bins.float().view(-1, 1), persistent=False)
        self.register_buffer("bin_keep", keep.float().view(-1, 1), persistent=False)
        self.register_buffer("mel_centres", centres.float().view(1, -1), persistent=False)

    def filterbank(self) -> torch.Tensor:
        """(N, n_mels) triangles in mel space, zero on bins above N/2."""
        tri = 1.0 - torch.abs(self.bin_mel - self.mel_centres) / self.mel_step
        return torch.clamp(tri, min=0.0) * self.bin_keep

    def power(self, x: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, frames, N) power spectrum in flat (k1, k2) layout."""
        b = x.shape[0]
        hops = x.reshape(b, self.samples // self.hop_length, self.hop_length)
        parts = [hops[:, i:i + self.frames] for i in range(self.hops_per_window)]
        frames = torch.cat(parts, dim=2) * self.window           # (B, T, win)
        pad = self.n_fft - self.win_length
        if pad:
            frames = torch.cat([frames, frames.new_zeros(b, self.frames, pad)], dim=2)
        xs = frames.reshape(b, self.frames, self.n1, self.n2)    # x[n1 * N2 + n2]
        yr = torch.matmul(self.c1, xs)                            # (B, T, k1, n2)
        yi = torch.matmul(self.s1, xs)
        zr = yr * self.tr - yi * self.ti
        zi = yr * self.ti + yi * self.tr
        xr = torch.matmul(zr, self.c2) - torch.matmul(zi, self.s2)   # (B, T, k1, k2)
        xi = torch.matmul(zr, self.s2) + torch.matmul(zi, self.c2)
        return (xr * xr + xi * xi).reshape(b, self.frames, self.n_fft)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.power(x), self.filterbank())        # (B, T, n_mels)
        return torch.log(mel + self.eps).transpose(1, 2).unsqueeze(1)
