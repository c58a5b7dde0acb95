"""Waveform helpers: WAV reading, resampling, and the augmentations applied to
synthesized keywords (time shift, gain, reverberation, background noise) and to
real recordings (``perturb``: those plus speed perturbation)."""

from __future__ import annotations

import struct
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

NOISE_KINDS = ("white", "pink", "brown", "hum", "babble-band")


# WAVE format tags: integer PCM, IEEE float, and the extensible header naming either.
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
# A streaming writer (a pipe from sox or ffmpeg, espeak-ng) leaves the data size unset.
_UNSET_SIZES = (0, 0xFFFFFFFF)
CONVERT_HINT = "convert it first, e.g. `sox in.wav -r 16000 -c 1 -b 16 out.wav`"


def read_wav(source: str | Path | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """(float32 mono samples in [-1, 1], sample rate) from a WAV file or its bytes.

    Reads integer PCM of 8 (unsigned), 16, 24 or 32 bits and IEEE float of 32 or 64
    bits, any rate, any number of channels (mixed down). Refuses, with a ValueError
    naming the file and the fix: compressed encodings, a header that promises more
    audio than the file holds, and float samples that are NaN or infinite."""
    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: no such file") from None
    return decode_wav(data, name)


# Sample rates a recording can have; a header outside them is damaged (and no
# resampling ratio exists for it).
MIN_RATE, MAX_RATE = 1000, 768_000


def decode_wav(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """``read_wav`` on bytes: walks the RIFF chunks as knowcache-device does (inputs.cc)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{name}: not a WAV file (no RIFF/WAVE header); {CONVERT_HINT}")
    fmt = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise ValueError(f"{name}: its format chunk is cut short; the file is damaged "
                                 "(copy or export it again)")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            if tag == _EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                tag = int.from_bytes(data[body + 24:body + 26], "little")
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                raise ValueError(f"{name}: the audio comes before its format chunk; the file is "
                                 f"damaged; {CONVERT_HINT}")
            available = len(data) - body
            if size not in _UNSET_SIZES and size > available:
                raise ValueError(f"{name}: the header promises {size} bytes of audio but the file "
                                 f"holds {available}; it is cut short (copy or record it again)")
            pcm = data[body: body + (available if size in _UNSET_SIZES else size)]
            return _samples(pcm, *fmt, name), fmt[2]
        pos = body + size + (size & 1)
    raise ValueError(f"{name}: a WAV file with no audio (no data chunk)")


def _samples(pcm: bytes, tag: int, channels: int, rate: int, bits: int, name: str) -> np.ndarray:
    if channels < 1 or not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"{name}: the header says {channels} channel(s) at {rate} Hz (recordings "
                         f"are {MIN_RATE}-{MAX_RATE} Hz); the file is damaged (copy or export "
                         "it again)")
    if tag == _PCM and bits in (8, 16, 24, 32):
        width = bits // 8
    elif tag == _FLOAT and bits in (32, 64):
        width = bits // 8
    else:
        kind = {_PCM: "integer PCM", _FLOAT: "float", 2: "ADPCM", 6: "A-law", 7: "mu-law",
                0x11: "IMA ADPCM", 0x55: "MP3"}.get(tag, f"format {tag}")
        raise ValueError(f"{name}: {bits}-bit {kind} audio, which knowcache does not read (it "
                         "reads 8, 16, 24 or 32-bit PCM and 32 or 64-bit float WAVs); "
                         f"{CONVERT_HINT}")
    frames = len(pcm) // (width * channels)
    raw = np.frombuffer(pcm, np.uint8, count=frames * width * channels)
    if tag == _FLOAT:
        x = raw.view("<f4" if bits == 32 else "<f8").astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: the audio holds NaN or infinite samples; export it again "
                             "as 16-bit PCM")
    elif bits == 8:
        x = (raw.astype(np.float64) - 128.0) / 128.0        # 8-bit WAV is unsigned
    elif bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
    else:
        x = raw.view("<i2" if bits == 16 else "<i4") / float(1 << (bits - 1))
    x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    return x.astype(np.float32)


def write_wav(path: str | Path, x: np.ndarray, rate: int) -> Path:
    """Float samples in [-1, 1] as a 16-bit PCM mono WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(to_int16(x).astype("<i2").tobytes())
    return Path(path)


def espeak_wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng --stdout writes a WAV whose length fields are unset; parse it leniently."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not produce a WAV stream")
    rate = int.from_bytes(data[24:28], "little")
    pos = data.find(b"data", 12)
    if pos < 0:
        raise ValueError("espeak-ng WAV stream has no data chunk")
    pcm = data[pos + 8:]
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    return x, rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return x.astype(np.float32)
    frac = Fraction(target, rate).limit_denominator(1000)
    return signal.resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)


def trim(x: np.ndarray, rate: int, rel_threshold: float = 0.02, margin_s: float = 0.02) -> np.ndarray:
    """Cuts leading and trailing silence (below rel_threshold of the peak)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x[:0]
    idx = np.flatnonzero(np.abs(x) > rel_threshold * peak)
    margin = int(margin_s * rate)
    return x[max(0, idx[0] - margin): idx[-1] + margin + 1]


def place(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random time shift: x at a random offset in a zero clip of ``length`` samples."""
    out = np.zeros(length, np.float32)
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start: start + length].astype(np.float32)
    offset = int(rng.integers(0, length - len(x) + 1))
    out[offset: offset + len(x)] = x
    return out


def noise(kind: str, length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background noise of one kind."""
    if kind == "white":
        n = rng.standard_normal(length)
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(length))
        f = np.fft.rfftfreq(length, 1.0 / rate)
        f[0] = f[1]
        spec /= np.sqrt(f) if kind == "pink" else f
        n = np.fft.irfft(spec, length)
    elif kind == "hum":
        t = np.arange(length) / rate
        base = rng.choice([50.0, 60.0])
        n = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3))
                for h in (1, 2, 3, 5)) + 0.05 * rng.standard_normal(length)
    elif kind == "babble-band":
        # Speech-band noise with a slow syllabic envelope, like a distant crowd.
        b, a = signal.butter(2, [300 / (rate / 2), 3000 / (rate / 2)], btype="band")
        n = signal.lfilter(b, a, rng.standard_normal(length))
        env = np.interp(np.arange(length), np.linspace(0, length, 12), rng.uniform(0.3, 1.0, 12))
        n = n * env
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    n = np.asarray(n, np.float64)
    return (n / (np.sqrt(np.mean(n ** 2)) + 1e-12)).astype(np.float32)


def reverberate(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Convolves with a synthetic room response (exponentially decaying noise)."""
    rt60 = rng.uniform(0.15, 0.6)
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0 / rng.uniform(0.3, 1.0)          # direct path against the reverberant tail
    y = signal.fftconvolve(x, rir)[: len(x)]
    peak = np.max(np.abs(y))
    return (y * (np.max(np.abs(x)) / peak) if peak > 0 else y).astype(np.float32)


def mix_noise(x: np.ndarray, n: np.ndarray, snr_db: float) -> np.ndarray:
    """Adds unit-RMS noise ``n`` at ``snr_db`` below the RMS of the active part of x."""
    active = np.abs(x) > 0.05 * (np.max(np.abs(x)) + 1e-12)
    rms = np.sqrt(np.mean(x[active] ** 2)) if active.any() else 0.0
    return (x + n * rms * 10 ** (-snr_db / 20)).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def shift(x: np.ndarray, samples: int) -> np.ndarray:
    """x moved by ``samples`` (later if positive), zero-filled, same length."""
    out = np.zeros_like(x)
    if samples >= 0:
        out[samples:] = x[:len(x) - samples]
    else:
        out[:samples] = x[-samples:]
    return out


def perturb(x: np.ndarray, rate: int, rng: np.random.Generator, *,
            speed: tuple[float, float] = (0.85, 1.15), max_shift_s: float = 0.15,
            reverb_prob: float = 0.3, noise_prob: float = 0.6,
            snr_db: tuple[float, float] = (5.0, 30.0)) -> np.ndarray:
    """Another take of a real recording (float in [-1, 1], same length): speed
    perturbation (tempo and pitch together, as Kaldi's 0.9/1.0/1.1 speed
    perturbation, here drawn from ``speed``), a time shift, synthetic room
    reverberation, background noise at a random SNR and a random gain."""
    n = len(x)
    y = resample(x, rate, int(round(rate * rng.uniform(*speed))))
    if len(y) >= n:
        start = (len(y) - n) // 2
        y = y[start:start + n]
    else:
        y = np.pad(y, (0, n - len(y)))
    limit = int(max_shift_s * rate)
    y = shift(y, int(rng.integers(-limit, limit + 1)))
    if rng.random() < reverb_prob:
        y = reverberate(y, rate, rng)
    if rng.random() < noise_prob:
        y = mix_noise(y, noise(str(rng.choice(NOISE_KINDS)), n, rate, rng), rng.uniform(*snr_db))
    return (y / (np.max(np.abs(y)) + 1e-9) * rng.uniform(0.05, 0.9)).astype(np.float32)
