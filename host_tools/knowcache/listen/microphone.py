"""The host microphone through sounddevice (PortAudio): 16 kHz mono float32
blocks, resampled when the device only opens at another rate."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from math import gcd
from typing import Iterator, Optional

import numpy as np

RATE = 16000
BLOCK_S = 0.05


class MicrophoneError(RuntimeError):
    """No usable input device; the message lists the ones there are."""


def _sd():
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio's shared library is missing
        raise MicrophoneError(f"PortAudio is not installed ({e}); install libportaudio2 "
                              "(Debian/Ubuntu) or portaudio (macOS)") from e
    return sd


def input_devices() -> list[dict]:
    return [d for d in _sd().query_devices() if d["max_input_channels"] > 0]


def describe_devices() -> str:
    devices = input_devices()
    if not devices:
        return "no audio input devices were found (is a microphone connected, and ALSA/PortAudio set up?)"
    lines = ["input devices:"]
    for d in devices:
        lines.append(f"  [{d['index']}] {d['name']} ({d['max_input_channels']} ch, "
                     f"default {d['default_samplerate']:.0f} Hz)")
    return "\n".join(lines)


def resolve(device: Optional[str]) -> dict:
    """The input device named (substring, case-insensitive) or numbered by ``device``."""
    devices = input_devices()
    if not devices:
        raise MicrophoneError(describe_devices())
    if device is None:
        sd = _sd()
        default = sd.default.device[0] if sd.default.device else -1
        chosen = next((d for d in devices if d["index"] == default), devices[0])
        return chosen
    if device.isdigit():
        found = [d for d in devices if d["index"] == int(device)]
    else:
        found = [d for d in devices if device.lower() in d["name"].lower()]
    if len(found) != 1:
        what = "no input device" if not found else f"{len(found)} input devices"
        raise MicrophoneError(f"{what} matches {device!r}; pass a name or an index.\n"
                              + describe_devices())
    return found[0]


class StreamResampler:
    """Polyphase resampling of a stream in blocks, continuous across block edges.

    Each call resamples the buffered input with ``hist`` samples of context on
    both sides of the region it emits (more than the filter's half-length), so
    the output equals resampling the whole stream at once, ``hist`` samples late.
    """

    def __init__(self, rate_in: int, rate_out: int = RATE, margin: int = 64):
        g = gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        half = 10 * max(self.up, self.down) // self.up + 1   # resample_poly's filter half-length
        self.hist = -(-max(margin, half) // self.down) * self.down
        self.buf = np.zeros(self.hist, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.up == self.down:
            return np.asarray(x, np.float32)
        from scipy.signal import resample_poly
        data = np.concatenate([self.buf, np.asarray(x, np.float32)])
        end = self.hist + (len(data) - 2 * self.hist) // self.down * self.down
        if end <= self.hist:
            self.buf = data
            return np.zeros(0, np.float32)
        y = resample_poly(data[: end + self.hist], self.up, self.down)
        self.buf = data[end - self.hist:]
        k = self.up // 1
        return y[self.hist * k // self.down: end * k // self.down].astype(np.float32)


@dataclass
class Block:
    samples: np.ndarray     # float32 in [-1, 1], 16 kHz mono
    arrival: float          # time.monotonic() when the last sample arrived


class Microphone:
    """An open input stream; iterate ``blocks()`` for 16 kHz audio."""

    def __init__(self, device: Optional[str] = None):
        sd = _sd()
        self.device = resolve(device)
        self.queue: queue.Queue = queue.Queue()
        self.overflows = 0
        self.rate = RATE
        try:
            self.stream = self._open(sd, RATE)
        except sd.PortAudioError:
            self.rate = int(self.device["default_samplerate"])
            try:
                self.stream = self._open(sd, self.rate)
            except sd.PortAudioError as e:
                raise MicrophoneError(f"cannot open {self.device['name']!r} at 16000 Hz or at "
                                      f"its default {self.rate} Hz: {e}\n"
                                      + describe_devices()) from e
        self.resample = StreamResampler(self.rate)

    def _open(self, sd, rate: int):
        def callback(indata, frames, time_info, status):
            if status.input_overflow:
                self.overflows += 1
            self.queue.put((indata[:, 0].astype(np.float32) / 32768.0, time.monotonic()))
        # 16-bit PCM: what every capture device (and ALSA's file plugin) offers.
        return sd.InputStream(device=self.device["index"], samplerate=rate, channels=1,
                              dtype="int16", blocksize=int(rate * BLOCK_S), callback=callback)

    def __enter__(self) -> "Microphone":
        self.stream.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stream.stop()
        self.stream.close()

    def blocks(self) -> Iterator[Block]:
        while True:
            try:
                x, arrival = self.queue.get(timeout=2.0)
            except queue.Empty:
                raise MicrophoneError(f"{self.device['name']!r} delivered no audio for 2 s")
            y = self.resample(x)
            if len(y):
                yield Block(y, arrival)
