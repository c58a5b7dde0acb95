"""Voice-activity detection for live keyword spotting: energy with an adaptive
noise floor and hysteresis, plus two checks that keep steady noise out.

Audio is cut into 10 ms frames; a frame's level is its energy in the speech
band (200-4000 Hz), so mains hum and rumble do not count. The noise floor follows the frame energy
down at once and up slowly while nobody speaks. The floor never drops below ``min_floor_db`` (digital
silence would otherwise make any dither look like speech). An utterance starts when
``min_on_frames`` frames in a row are ``on_db`` above the floor (and above
``min_level_db``), and ends after ``hangover_frames`` frames in a row below
``off_db`` above the floor. An utterance is dropped, and the floor re-based on
its level, when it lasts longer than ``max_utterance_s`` (a keyword is
shorter: that was noise switching on) or when its frames are spectrally flat
(median spectral flatness above ``max_flatness``: white/pink noise, not a
voice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000
FRAME = 160  # 10 ms


@dataclass(frozen=True)
class VadConfig:
    on_db: float = 12.0
    off_db: float = 6.0
    min_level_db: float = -50.0      # dBFS; quieter frames never start an utterance
    min_floor_db: float = -70.0      # dBFS; the floor never goes lower (digital silence)
    min_on_frames: int = 3
    hangover_frames: int = 25        # 250 ms below the off level ends an utterance
    preroll_frames: int = 15         # kept before the onset
    max_utterance_s: float = 1.5
    max_flatness: float = 0.45
    floor_rise: float = 0.02         # per frame, while silent


@dataclass
class Segment:
    start: int      # sample index in the stream (includes the pre-roll)
    end: int        # one past the last voiced sample
    level_db: float


BAND_HZ = (200, 4000)   # where speech has its energy; rumble and hiss above are ignored


def _band_power(frames: np.ndarray) -> np.ndarray:
    spec = np.abs(np.fft.rfft(frames.astype(np.float64) * np.hanning(frames.shape[-1]),
                              axis=-1)) ** 2
    hz = np.fft.rfftfreq(frames.shape[-1], 1 / SAMPLE_RATE)
    return spec[..., (hz >= BAND_HZ[0]) & (hz <= BAND_HZ[1])] + 1e-12


def frame_db(frames: np.ndarray) -> np.ndarray:
    """Speech-band (200-4000 Hz) level per frame in dBFS (a full-scale sine: about -3 dB)."""
    power = _band_power(frames).sum(axis=-1) * 2 / (frames.shape[-1] * np.hanning(
        frames.shape[-1]).sum())
    return 10 * np.log10(power + 1e-10)


def flatness(frames: np.ndarray) -> np.ndarray:
    """Spectral flatness per frame in the speech band: geometric over arithmetic mean power."""
    spec = _band_power(frames)
    return np.exp(np.mean(np.log(spec), axis=-1)) / np.mean(spec, axis=-1)


class VoiceActivityDetector:
    """Feed float32 samples in [-1, 1] at 16 kHz; get finished utterance segments."""

    def __init__(self, config: VadConfig = VadConfig()):
        self.config = config
        self.floor: Optional[float] = None
        self.pending = np.zeros(0, np.float32)
        self.frame_index = 0            # frames consumed so far
        self.run_on = 0
        self.run_off = 0
        self.active_start: Optional[int] = None   # frame index of the onset
        self.active_frames: list[tuple[float, float]] = []   # (db, flatness) while active
        self.dropped = 0                # utterances rejected as noise

    def push(self, samples: np.ndarray) -> list[Segment]:
        x = np.concatenate([self.pending, np.asarray(samples, np.float32).reshape(-1)])
        n = len(x) // FRAME
        self.pending = x[n * FRAME:]
        if n == 0:
            return []
        frames = x[: n * FRAME].reshape(n, FRAME)
        dbs, flats = frame_db(frames), flatness(frames)
        out = []
        for db, flat in zip(dbs, flats):
            seg = self._step(float(db), float(flat))
            if seg is not None:
                out.append(seg)
            self.frame_index += 1
        return out

    def _step(self, db: float, flat: float) -> Optional[Segment]:
        c = self.config
        if self.floor is None:
            self.floor = max(db, c.min_floor_db)
        if self.active_start is None:
            if db > self.floor + c.on_db and db > c.min_level_db:
                self.run_on += 1
                self.active_frames.append((db, flat))
                if self.run_on >= c.min_on_frames:
                    self.active_start = self.frame_index - self.run_on + 1
                    self.run_off = 0
                return None
            self.run_on = 0
            self.active_frames = []
            # follow the floor down at once, up slowly
            self.floor = db if db < self.floor else self.floor + c.floor_rise * (db - self.floor)
            self.floor = max(self.floor, c.min_floor_db)
            return None
        self.active_frames.append((db, flat))
        self.run_off = self.run_off + 1 if db < self.floor + c.off_db else 0
        length_s = (self.frame_index - self.active_start + 1) * FRAME / SAMPLE_RATE
        if length_s > c.max_utterance_s:
            return self._drop()
        if self.run_off >= c.hangover_frames:
            return self._finish()
        return None

    def _finish(self) -> Optional[Segment]:
        c = self.config
        voiced = self.active_frames[: len(self.active_frames) - self.run_off]
        end_frame = self.frame_index - self.run_off + 1
        start_frame = max(0, self.active_start - c.preroll_frames)
        levels = [db for db, _ in voiced]
        flat = float(np.median([f for _, f in voiced])) if voiced else 1.0
        self._reset()
        if flat > c.max_flatness:
            self.dropped += 1
            return None
        return Segment(start_frame * FRAME, end_frame * FRAME, float(np.max(levels)))

    def _drop(self) -> None:
        c = self.config
        levels = [db for db, _ in self.active_frames]
        self.floor = max(float(np.median(levels)), c.min_floor_db)   # the new background
        self.dropped += 1
        self._reset()
        return None

    def _reset(self) -> None:
        self.active_start = None
        self.active_frames = []
        self.run_on = 0
        self.run_off = 0
