"""The one input contract: what knowcache accepts, converts and refuses, on every path.

`knowcache infer`, `knowcache device infer` (the host converts, then sends the
tensor), `knowcache data speech --add` and `knowcache eval` (data/folders.py)
read files through this module; knowcache-device (runtime_cpp/device/inputs.cc)
follows the same rules where a board can, and the engine itself refuses NaN
and infinite values (runtime_cpp/src/engine.cc). docs/inputs.md is its prose.

Audio (a task whose input spec has a sample rate, kws):
  accepted   WAV, integer PCM of 8, 16, 24 or 32 bits or float of 32 or 64 bits
  converted  any rate (resampled to the spec's), any channels (mixed down);
             shorter than 1 s: centred in silence; longer: the loudest second
             (by energy), with a notice saying which
  refused    other encodings (ADPCM, mu-law, MP3...), a header promising more
             audio than the file holds, an empty recording, NaN or infinite samples
Images (a task whose input spec has an image size, vision):
  accepted   PNG, JPEG or BMP of any size and mode
  converted  to grey or RGB as the spec's channels, resized to its height x width,
             pixels scaled to [0, 1]
  raw        (devices, which decode no images) C*H*W uint8 bytes, or float32 ones
Every path refuses a missing file, a folder and an unreadable file with a
sentence naming the file and the fix; a caller handling several files reports
each refusal and goes on.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from knowcache.data import audio

RATE = 16000                 # the kws models' rate: 1 s is RATE samples
AUDIO_SUFFIXES = (".wav",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# What image programs take: float pixels in this range (their manifest's
# "value_range"), normalized inside the program.
PIXEL_RANGE = (0.0, 1.0)
RAW_SUFFIXES = (".raw", ".bin", ".f32")


class InputError(ValueError):
    """A refused input; the message names the file, what is wrong and what to do."""


@dataclass
class PreparedInput:
    """A file as the model input: ``x`` has the spec's shape, float32."""

    x: np.ndarray
    notice: Optional[str] = None     # a conversion worth telling the user (long clip...)


@dataclass(frozen=True)
class InputShape:
    """What a task's programs take (the manifest's input spec): shape plus the
    sample rate (audio) or the (C, H, W) image size and the pixels' value range
    (images)."""

    shape: tuple[int, ...]
    sample_rate: int = 0
    image_size: tuple[int, ...] = ()
    value_range: tuple[float, float] = PIXEL_RANGE

    @classmethod
    def of(cls, spec) -> "InputShape":
        """From a runtime ``InputSpec`` (``PartitionInfo.input``); a manifest that
        states no value_range (written before it was stated) means [0, 1]."""
        return cls(tuple(int(d) for d in spec.shape), int(spec.sample_rate or 0),
                   tuple(int(d) for d in (spec.image_size or ())),
                   tuple(spec.value_range or PIXEL_RANGE))

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """uint8 pixels as float32 in the value range (0 -> low, 255 -> high)."""
        low, high = self.value_range
        return (low + p.astype(np.float32) * np.float32((high - low) / 255.0)).astype(np.float32)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))


def task_of(path: str | os.PathLike) -> str:
    """The task a file is for, by its suffix: kws for WAV, vision for images."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "kws"
    if suffix in IMAGE_SUFFIXES:
        return "vision"
    raise InputError(f"{path}: cannot tell the task from {suffix or 'a file with no suffix'}; "
                     f"pass a WAV ({', '.join(AUDIO_SUFFIXES)}) or an image "
                     f"({', '.join(IMAGE_SUFFIXES)}), or name the task with --task")


def check_file(path: str | os.PathLike) -> None:
    """InputError saying what to pass instead of a folder or a missing file."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a file; pass the files in it "
                         f"(e.g. {p}/*.wav)")
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; InputError saying what to pass instead of a folder or missing file."""
    p = Path(path)
    check_file(p)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file; check the path") from None
    except OSError as e:
        raise InputError(f"{p}: cannot be read ({e.strerror}); check its permissions") from None


def loudest_second(x: np.ndarray, length: int = RATE) -> np.ndarray:
    """The loudest ``length`` samples of ``x`` (by energy), or ``x`` centred in
    ``length`` samples of zeros. The one windowing rule for clips of any length."""
    if len(x) <= length:
        out = np.zeros(length, np.float32)
        start = (length - len(x)) // 2
        out[start: start + len(x)] = x
        return out
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(length), mode="valid")
    start = int(np.argmax(energy))
    return x[start: start + length].astype(np.float32)


def loudest_start(x: np.ndarray, length: int = RATE) -> int:
    """Where ``loudest_second`` cuts a clip longer than ``length`` (0 otherwise)."""
    if len(x) <= length:
        return 0
    return int(np.argmax(np.convolve(x.astype(np.float64) ** 2, np.ones(length), mode="valid")))


def waveform(data: bytes, name: str, rate: int = RATE) -> np.ndarray:
    """A WAV's samples at ``rate``, mono, float32; InputError for what the contract refuses."""
    try:
        x, source_rate = audio.decode_wav(data, name)
    except ValueError as e:
        raise InputError(str(e)) from None
    if len(x) == 0:
        raise InputError(f"{name}: the recording is empty; record it again")
    return audio.resample(x, source_rate, rate)


def audio_input(data: bytes, name: str, spec: InputShape) -> PreparedInput:
    """A WAV as the model's input: resampled, mixed down, its loudest second."""
    rate = spec.sample_rate or RATE
    length = spec.elements
    x = waveform(data, name, rate)
    notice = None
    if len(x) > length:
        start = loudest_start(x, length)
        notice = (f"{name}: {len(x) / rate:.2f} s long; classified its loudest "
                  f"{length / rate:g} s ({start / rate:.2f}-{(start + length) / rate:.2f} s)")
    return PreparedInput(loudest_second(x, length).reshape(spec.shape), notice)


def image_pixels(data: bytes, name: str, image_size: Sequence[int]) -> np.ndarray:
    """An image file as (C, H, W) uint8: grey or RGB, resized."""
    import io

    from PIL import Image, UnidentifiedImageError

    c, h, w = image_size
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise InputError(f"{name}: not a readable image ({e}); pass a PNG, JPEG or BMP "
                         "file") from None
    except (ValueError, SyntaxError, EOFError, struct.error, IndexError, ZeroDivisionError) as e:
        # What Pillow's decoders raise on damaged headers (found by fuzzing:
        # scripts/fuzz_python.py image), e.g. "Truncated IHDR chunk".
        raise InputError(f"{name}: a damaged image ({type(e).__name__}: {e}); pass a PNG, JPEG "
                         "or BMP file that opens in an image viewer") from None
    return a[None] if c == 1 else a.transpose(2, 0, 1)


def image_input(data: bytes, name: str, spec: InputShape) -> PreparedInput:
    """An image file as the model's input."""
    pixels = image_pixels(data, name, spec.image_size)
    return PreparedInput(spec.pixels(pixels).reshape(spec.shape))


def raw_input(data: bytes, name: str, spec: InputShape) -> PreparedInput:
    """Raw pixels as a device takes them: C*H*W uint8 bytes or float32 ones."""
    n = spec.elements
    if len(data) == n:
        x = spec.pixels(np.frombuffer(data, np.uint8))
    elif len(data) == 4 * n:
        x = np.frombuffer(data, "<f4").astype(np.float32)
    else:
        raise InputError(f"{name}: {len(data)} bytes; the model takes {n} uint8 pixels "
                         f"({n} bytes) or float32 ({4 * n} bytes), channels first, or a "
                         f"PNG/JPEG image")
    check_finite(x, name)
    return PreparedInput(x.reshape(spec.shape))


def check_finite(x: np.ndarray, name: str) -> None:
    """NaN and infinity are refused locally, as the cloud refuses them."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise InputError(f"{name}: holds NaN or infinite values (first at element {bad}); "
                         "the models take finite numbers")


def prepare(path: str | os.PathLike, spec: InputShape) -> PreparedInput:
    """A file as the input of programs with ``spec``: the one entry point."""
    name = str(path)
    data = read_bytes(path)
    suffix = Path(path).suffix.lower()
    if spec.sample_rate:
        if suffix in IMAGE_SUFFIXES:
            raise InputError(f"{name}: an image, but these models take {spec.sample_rate} Hz "
                             "audio; pass a WAV file or the vision models (--task vision)")
        return audio_input(data, name, spec)
    if suffix in AUDIO_SUFFIXES or data[:4] == b"RIFF":
        raise InputError(f"{name}: audio, but these models take {spec.image_size} images; "
                         "pass a PNG/JPEG file or the kws models (--task kws)")
    if suffix in RAW_SUFFIXES or (suffix not in IMAGE_SUFFIXES
                                  and len(data) in (spec.elements, 4 * spec.elements)):
        return raw_input(data, name, spec)
    return image_input(data, name, spec)
