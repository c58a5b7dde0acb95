"""Google's speech_embedding (Lin et al., "Training Keyword Spotters with Limited
and Synthesized Speech Data", ICASSP 2020) as plain PyTorch modules.

The network was trained on a large corpus of real speech; a keyword head on its
96-d embeddings learns from synthesized speech what a model trained on
spectrograms learns only from real recordings. The weights come from the
``openwakeword==0.5.1`` wheel (Apache-2.0), which ships the model as
``embedding_model.onnx`` with its front end ``melspectrogram.onnx``; they are
read from the ONNX initializers with the ``onnx`` package (build time only:
exported programs carry them).

* ``GoogleMel``: raw 16 kHz waveform -> (B, T, 32) log-mel, the same numbers
  as ``melspectrogram.onnx`` followed by openWakeWord's ``x / 10 + 2``. The
  512-point DFT is computed factorized (N1 x N2 = 16 x 32, ``dft.FactorizedDFT``)
  over frames cut from 160-sample hops, so a program
  carries 3.6k DFT constants instead of the ONNX model's 263k; frames that see
  only the zero padding around a clip are not transformed (``margins``).
  Every op has an XNNPACK kernel, so a kws program is one delegate call.
* ``SpeechEmbedding``: (B, T, 32) -> (B, T', 96). It is fully convolutional in
  time with a time stride of 8 frames, so one pass over a long input gives the
  embedding of every 76-frame window at a step of 8 frames (openWakeWord's
  streaming step), sharing all computation between windows. Given where the
  input's zero padding lies (``Margins``), it convolves only the time steps
  that see the clip, plus one step of the padding on each side: a step that
  sees only padding has the same value as its neighbour, so every layer's
  padding is that one column (the kws models: two thirds of the trunk's FLOPs).

Both are checked against onnxruntime by the tests (tests/test_speech_embedding.py).
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from knowcache.models.dft import FactorizedDFT
from knowcache.models.xnn_ops import global_max, with_channel

WINDOW_FRAMES = 76       # one embedding sees 76 frames (775 ms)
FRAME_STEP = 8           # successive embeddings are 8 frames (80 ms) apart
EMBEDDING_DIM = 96
MEL_BINS = 32
HOP = 160
N_FFT = 512
TOP_DB = 80.0


def openwakeword_model(name: str) -> Path:
    """Path of one of openWakeWord's bundled ONNX models (``embedding_model``, ``melspectrogram``)."""
    try:
        root = resources.files("openwakeword") / "resources" / "models"
    except ModuleNotFoundError:
        raise RuntimeError("the openwakeword wheel is not installed; run `make setup` (it installs "
                           "openwakeword==0.5.1 for its bundled speech_embedding weights)") from None
    path = Path(str(root / f"{name}.onnx"))
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the openwakeword wheel; reinstall "
                           "openwakeword==0.5.1")
    return path


@functools.lru_cache(maxsize=4)
def onnx_weights(name: str) -> dict[str, np.ndarray]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise RuntimeError("the onnx package is needed to read speech_embedding weights; run "
                           "`make setup`") from None
    model = onnx.load(str(openwakeword_model(name)))
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


class GoogleMel(nn.Module):
    """(B, samples) waveform in [-1, 1] at 16 kHz -> (B, frames, 32) log-mel.

    frames = (samples - 512) // 160 + 1 (no centring, as the ONNX front end).
    The top-dB floor is taken per example (the ONNX model takes it over its
    whole input, which is the same for the batch of one it is run with).

    With ``margins`` = (left, right) the input is the middle of those
    ``samples``, (B, samples - left - right): the module answers exactly as if
    it were given ``left`` zeros,
    the input, then ``right`` zeros, but runs the DFT only on the frames that
    reach the input (a frame of zeros has power 0, whose log-mel is the clamp
    value), about half of them for the kws models' 0.5 s of zeros each side.
    """

    def __init__(self, samples: int, margins: tuple[int, int] = (0, 0)):
        super().__init__()
        left, right = margins
        if samples < N_FFT or samples % 32:
            raise ValueError("samples must be at least 512 and a multiple of 32")
        if left < 0 or right < 0 or left % 32 or left + right >= samples:
            raise ValueError("margins must be two counts of zeros, the left a multiple of 32, "
                             "leaving some input between them")
        w = onnx_weights("melspectrogram")
        real = w["0.stft.conv_real.weight"][:, 0, :].astype(np.float64)
        window = real[0]                                   # the DC row is the window itself
        self.samples, self.left, self.right = samples, left, right
        self.frames = (samples - N_FFT) // HOP + 1
        # Frames [first, stop) reach the input; the others see only zeros.
        self.first = max(0, (left - N_FFT) // HOP + 1)
        self.stop = min(self.frames, -(-(samples - right) // HOP))
        self.dft = FactorizedDFT(16, 32)
        self.register_buffer("window", torch.from_numpy(window).float().view(1, 1, N_FFT),
                             persistent=False)
        # The 257 x 32 filterbank on the DFT's flat positions (positions above bin 256: zero).
        mel = np.zeros((self.dft.positions, MEL_BINS), np.float32)
        mel[self.dft.flat_bins(N_FFT // 2 + 1)] = w["1.melW"].astype(np.float32)
        self.register_buffer("mel", torch.from_numpy(mel), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        live = self.stop - self.first
        # The samples the live frames read (input coordinates), zeros where they
        # reach into the margins, as rows of one hop (160 samples). A frame is the
        # 512 samples from its row: rows j, j+1, j+2 and the first 32 samples of
        # row j+3, so the frames are four unstrided slices of the rows (what
        # XNNPACK takes; strided ones it leaves to slower portable kernels).
        rows = -(-N_FFT // HOP)                                          # 4
        start = self.first * HOP - self.left
        end = start + (live - 1 + rows) * HOP
        middle = self.samples - self.left - self.right
        parts = [x[:, max(0, start):min(middle, end)] * 32768.0]     # int16 scale, as trained
        if start < 0:
            parts.insert(0, x.new_zeros(b, -start))
        if end > middle:
            parts.append(x.new_zeros(b, end - middle))
        hops = torch.cat(parts, 1).reshape(b, live - 1 + rows, HOP)
        frames = torch.cat([hops[:, i:i + live] for i in range(rows - 1)]
                           + [hops[:, rows - 1:rows - 1 + live, :N_FFT - (rows - 1) * HOP]], dim=2)
        power = self.dft.power(frames * self.window)               # (B, live, positions)
        mel = torch.clamp(torch.matmul(power, self.mel), min=1e-10)
        # the frames of zeros: power 0, so the clamp value
        silent = [(self.first, 0), (self.frames - self.stop, 1)]
        for count, side in silent:
            if count:
                pad = mel.new_full((b, count, MEL_BINS), 1e-10)
                mel = torch.cat([pad, mel] if side == 0 else [mel, pad], 1)
        db = torch.log(mel) * (10.0 / math.log(10.0))       # 10 log10, as XNNPACK's log
        peak = global_max(with_channel(db)).reshape(b, 1, 1)        # the example's peak
        return torch.maximum(db, peak - TOP_DB) / 10.0 + 2.0


class Margins:
    """Where a ``SpeechEmbedding`` input's padding lies, layer by layer.

    The trunk's convolutions are valid in time and its pools floor, so a time
    step whose inputs are all padding columns (one value per example, the same
    on both sides: the log-mel of zeros) is itself a padding column. Layer k's
    activations (T_k steps) are kept as the steps [a_k, a_k + n_k) that see the
    clip plus one padding column at each end where there is padding: the rest
    repeats those columns. ``frames`` is the log-mel's length, [first, stop)
    its frames that see the clip.
    """

    def __init__(self, frames: int, first: int, stop: int):
        if not 0 <= first < stop <= frames:
            raise ValueError("the clip's frames must lie inside the input")
        a, end = max(0, first - 1), min(frames, stop + 1)
        self.states = [(a, end - a, frames)]       # (a, n, T) before conv k; last: after `out`
        self.conv_pads: list[tuple[int, int]] = []  # edge columns repeated before conv k
        self.pool_pads: dict[int, tuple[int, int]] = {}
        for k, (kt, _) in enumerate(SpeechEmbedding._KERNELS + [(3, 1)]):
            a, n, t = self.states[-1]
            a, n, t = self._conv(kt, a, n, t)
            if SpeechEmbedding._POOLS.get(k, (1, 1))[0] == 2:
                a, n, t = self._pool(k, a, n, t)
            self.states.append((a, n, t))

    def _conv(self, kt: int, a: int, n: int, t: int) -> tuple[int, int, int]:
        t2 = t - kt + 1
        p, q = max(0, a - kt + 1), min(t2, a + n)
        self.conv_pads.append((a - p, q + kt - 1 - (a + n)))
        return p, q - p, t2

    def _pool(self, k: int, a: int, n: int, t: int) -> tuple[int, int, int]:
        t2 = t // 2
        p, q = max(0, (a - 1) // 2), min(t2, (a + n) // 2 + 1)
        self.pool_pads[k] = (a - 2 * p, 2 * q - (a + n))
        return p, q - p, t2

    @staticmethod
    def pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """(B, C, n, F) with ``left`` copies of its first step before it and ``right``
        of its last after it (a negative count drops steps instead)."""
        if left < 0:
            x = x[:, :, -left:]
        if right < 0:
            x = x[:, :, :x.shape[2] + right]
        if left <= 0 and right <= 0:
            return x
        parts = [x[:, :, :1]] * max(0, left) + [x] + [x[:, :, -1:]] * max(0, right)
        return torch.cat(parts, 2)

    def kept(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer ``layer``'s whole activations (B, C, T, F) -> the kept steps (a view);
        kept steps are returned as they are."""
        a, n, t = self.states[layer]
        if x.shape[2] == n:
            return x
        if x.shape[2] != t:
            raise ValueError(f"layer {layer} has {t} time steps ({n} kept), not {x.shape[2]}")
        return x[:, :, a:a + n]

    def whole(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The kept steps of layer ``layer`` -> its whole activations."""
        a, n, t = self.states[layer]
        if a == 0 and n == t:
            return x
        b, c, _, f = x.shape
        parts = [x[:, :, :1].expand(b, c, a, f), x, x[:, :, -1:].expand(b, c, t - a - n, f)]
        return torch.cat([p for p in parts if p.shape[2]], 2)


class SpeechEmbedding(nn.Module):
    """(B, T, 32) log-mel -> (B, (T - 76) // 8 + 1, 96): one embedding per 76-frame
    window, windows 8 frames apart (T - 76 must be a multiple of 8). With
    ``margins`` the input must be that long and padded there: the trunk then
    works on the kept steps (``trunk`` takes and returns them; ``Margins.whole``
    expands them)."""

    # (kernel, pad along mel) of convs 0..18, and where the max-pools sit.
    _KERNELS = [(3, 3)] + [(1, 3), (3, 1)] * 9
    _POOLS = {2: (2, 2), 6: (1, 2), 10: (2, 2), 14: (1, 2), 18: (2, 2)}

    def __init__(self, margins: Margins | None = None):
        super().__init__()
        w = onnx_weights("embedding_model")
        self.margins = margins
        self.convs = nn.ModuleList()
        for i, (kt, km) in enumerate(self._KERNELS):
            name = "model/conv2d" + (f"_{i}" if i else "")
            weight = torch.from_numpy(w[f"{name}/Conv2D_weights_fused_bn"])
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], (kt, km),
                             padding=(0, 1 if km == 3 else 0))
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(torch.from_numpy(w[f"{name}/Conv2D_bias_fused_bn"]))
            self.convs.append(conv)
        last = torch.from_numpy(w["model/conv2d_19/Conv2D/ReadVariableOp:0"])
        self.out = nn.Conv2d(96, 96, (3, 1), bias=False)
        self.out.weight.data.copy_(last)
        self.floor = float(w["const_fold_opt__287"].reshape(-1)[0])   # max(x, -0.4) after each act
        self.act = nn.LeakyReLU(0.2)

    def trunk(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(B, C, T, F) -> activations after convs ``start`` .. ``stop`` - 1 (each with
        its pool); from the (B, 1, T, 32) log-mel through every conv by default.
        With margins: the kept steps in and out (whole activations in are cut)."""
        m = self.margins
        if m is not None:
            x = m.kept(x, start)
        for i in range(start, len(self.convs) if stop is None else stop):
            if m is not None:
                x = m.pad(x, *m.conv_pads[i])
            x = torch.clamp(self.act(self.convs[i](x)), min=self.floor)
            if i in self._POOLS:
                if m is not None and i in m.pool_pads:
                    x = m.pad(x, *m.pool_pads[i])
                x = nn.functional.max_pool2d(x, self._POOLS[i])
        return x

    def embedding_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last activations (B, 96, T'', 1) (kept steps, with margins) -> the
        embeddings as (B, 96, T', 1)."""
        m = self.margins
        if m is None:
            return self.out(x)
        last = len(self.convs)
        return m.whole(self.out(m.pad(m.kept(x, last), *m.conv_pads[last])), last + 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last activations (B, 96, T'', 1) -> embeddings (B, T', 96)."""
        e = self.embedding_map(x)
        return e.reshape(e.shape[:3]).transpose(1, 2)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(with_channel(mel)))

    @staticmethod
    def windows(frames: int) -> int:
        if frames < WINDOW_FRAMES or (frames - WINDOW_FRAMES) % FRAME_STEP:
            raise ValueError(f"{frames} frames: need 76 + a multiple of 8")
        return (frames - WINDOW_FRAMES) // FRAME_STEP + 1


def padded_samples(samples: int, pad_s: float) -> int:
    """Samples after zero-padding each side by ``pad_s`` seconds, rounded up so that the
    frame count is 76 + a multiple of 8."""
    n = samples + 2 * int(round(pad_s * 16000))
    frames = (n - N_FFT) // HOP + 1
    frames = WINDOW_FRAMES + math.ceil(max(0, frames - WINDOW_FRAMES) / FRAME_STEP) * FRAME_STEP
    return (frames - 1) * HOP + N_FFT
