"""The spectrogram branch of the kws full model: a ResNet on a 40-band log-mel.

It is the previous knowcache kws full model (97.8% on held-out synthesized
voices, 47.6% on real ones). Beside the speech_embedding trunk, which carries
what real voices need, it adds what the synthesized training voices teach;
the full model's head learns from both (see ``nets.KwsNet``). The log-mel
front end frames 25 ms Hann windows every 10 ms and uses the factorized DFT
(``dft.FactorizedDFT``); its mel filterbank, triangles in mel space, is built
once as a 272 x 40 constant (43 KB of the 5 MB full program), so the product
runs in XNNPACK (built in the graph, it was a portable-kernel matmul).
"""

from __future__ import annotations

import torch
from torch import nn

from knowcache.models.dft import FactorizedDFT
from knowcache.models.resnet import ResNet, ResNetConfig
from knowcache.models.xnn_ops import with_channel

# The branch's network (the previous kws full model's).
SPECTROGRAM_CONFIG = ResNetConfig(in_channels=1, stem_width=48, stem_stride=2, widths=(48, 96, 192))


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
        self.dft = FactorizedDFT(n1, n2)
        # Each flat DFT position's mel position, and a mask that keeps bins 0..N/2 only.
        k = self.dft.bins()
        freq = k * sample_rate / n_fft
        keep = (k <= n_fft // 2).double()
        mel_bins = hz_to_mel(freq)
        lo, hi = hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max))
        centres = torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64)[1:-1]
        self.mel_step = float(centres[1] - centres[0])
        self.register_buffer("bin_mel", mel_bins.float().view(-1, 1), persistent=False)
        self.register_buffer("bin_keep", keep.float().view(-1, 1), persistent=False)
        self.register_buffer("mel_centres", centres.float().view(1, -1), persistent=False)
        self.register_buffer("bank", self.filterbank(), persistent=False)

    def filterbank(self) -> torch.Tensor:
        """(positions, n_mels) triangles in mel space, zero on bins above N/2."""
        tri = 1.0 - torch.abs(self.bin_mel - self.mel_centres) / self.mel_step
        return torch.clamp(tri, min=0.0) * self.bin_keep

    def power(self, x: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, frames, positions) power spectrum in the DFT's flat layout."""
        b = x.shape[0]
        hops = x.reshape(b, self.samples // self.hop_length, self.hop_length)
        parts = [hops[:, i:i + self.frames] for i in range(self.hops_per_window)]
        frames = torch.cat(parts, dim=2) * self.window           # (B, T, win)
        pad = self.n_fft - self.win_length
        if pad:
            frames = torch.cat([frames, frames.new_zeros(b, self.frames, pad)], dim=2)
        return self.dft.power(frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.power(x), self.bank)                # (B, T, n_mels)
        return with_channel(torch.log(mel + self.eps).transpose(1, 2))


class SpectrogramNet(nn.Module):
    """(B, 16000) waveform -> logits over the task's classes (trained on its own);
    ``pooled`` gives the 192-d features the full model's head reads."""

    def __init__(self, config: ResNetConfig, classes: int, feature_mean: float = 0.0,
                 feature_std: float = 1.0):
        super().__init__()
        self.frontend = LogMel()
        self.register_buffer("feature_mean", torch.tensor(float(feature_mean)))
        self.register_buffer("feature_std", torch.tensor(float(feature_std)))
        self.backbone = ResNet(config, classes)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return (self.frontend(wave) - self.feature_mean) / self.feature_std

    def pooled(self, wave: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        return b.pool(b.stages(b.stem(self.features(wave)))).flatten(1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.features(wave))
