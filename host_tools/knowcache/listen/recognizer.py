"""Live keyword recognition: 16 kHz blocks -> ring buffer -> voice-activity
detection -> a 1 s window around each utterance -> the two-stage engine."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from knowcache.data import audio
from knowcache.listen.microphone import RATE, Block
from knowcache.listen.vad import Segment, VadConfig, VoiceActivityDetector

WINDOW = RATE          # the models classify 1 s
RING_S = 4.0
SILENCE = "_silence_"  # the kws models' no-word class: not a command


@dataclass
class Recognition:
    word: str
    index: int
    confidence: float
    source: str             # local | cloud | degraded | private | local_only
    latency_ms: float       # end of the utterance (as captured) -> result
    compute_ms: float       # the engine's share
    start_s: float          # position in the stream
    end_s: float
    wav: Optional[str] = None
    private: bool = False   # a private class: this utterance never left the device

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Summary:
    utterances: int = 0
    by_source: dict = field(default_factory=lambda: {"local": 0, "cloud": 0, "degraded": 0})
    latencies_ms: list = field(default_factory=list)
    audio_s: float = 0.0
    busy_s: float = 0.0      # time spent in VAD + inference
    dropped_noise: int = 0
    silence: int = 0         # utterances the model called _silence_

    def add(self, r: Recognition) -> None:
        self.utterances += 1
        self.by_source[r.source] = self.by_source.get(r.source, 0) + 1
        self.latencies_ms.append(r.latency_ms)

    def as_dict(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"utterances": self.utterances, **self.by_source,
                "local_rate": self.by_source["local"] / self.utterances if self.utterances else 0.0,
                "latency_ms_mean": float(lat.mean()), "latency_ms_median": float(np.median(lat)),
                "audio_s": round(self.audio_s, 3), "real_time_factor":
                self.busy_s / self.audio_s if self.audio_s else 0.0,
                "dropped_as_noise": self.dropped_noise, "classified_silence": self.silence}


class Ring:
    """The last ``seconds`` of the stream, addressed by absolute sample index."""

    def __init__(self, seconds: float = RING_S):
        self.data = np.zeros(int(seconds * RATE), np.float32)
        self.total = 0      # samples written so far

    def write(self, x: np.ndarray) -> None:
        n = len(x)
        if n >= len(self.data):
            self.data[:] = x[-len(self.data):]
        else:
            self.data = np.roll(self.data, -n)
            self.data[-n:] = x
        self.total += n

    def read(self, start: int, length: int) -> np.ndarray:
        """Samples [start, start+length), zero where the ring no longer (or not yet) has them."""
        out = np.zeros(length, np.float32)
        first = self.total - len(self.data)
        lo, hi = max(start, first), min(start + length, self.total)
        if hi > lo:
            out[lo - start: hi - start] = self.data[lo - first: hi - first]
        return out


def window_for(seg: Segment) -> int:
    """Start of the 1 s window: centred on the utterance, or its first second when longer."""
    if seg.end - seg.start >= WINDOW:
        return seg.start
    return max(0, (seg.start + seg.end) // 2 - WINDOW // 2)


class Recognizer:
    def __init__(self, engine, *, vad: VadConfig = VadConfig(), record: Optional[Path] = None):
        self.engine = engine
        self.vad = VoiceActivityDetector(vad)
        self.ring = Ring()
        self.record = Path(record) if record else None
        if self.record:
            self.record.mkdir(parents=True, exist_ok=True)
        self.summary = Summary()
        self._arrivals: list[tuple[int, float]] = []   # (samples total after block, arrival)

    def _captured_at(self, sample: int) -> float:
        """When ``sample`` was captured: its block's arrival minus what came after it."""
        for total, arrival in self._arrivals:
            if total >= sample:
                return arrival - (total - sample) / RATE
        return self._arrivals[-1][1] if self._arrivals else time.monotonic()

    def feed(self, block: Block) -> list[Recognition]:
        t0 = time.perf_counter()
        self.ring.write(block.samples)
        self._arrivals.append((self.ring.total, block.arrival))
        self._arrivals = self._arrivals[-200:]
        self.summary.audio_s += len(block.samples) / RATE
        results = [r for seg in self.vad.push(block.samples)
                   if (r := self._classify(seg)) is not None]
        self.summary.dropped_noise = self.vad.dropped
        self.summary.busy_s += time.perf_counter() - t0
        return results

    def _classify(self, seg: Segment) -> Optional[Recognition]:
        start = window_for(seg)
        x = self.ring.read(start, WINDOW)
        r = self.engine.infer(x[None, :])
        done = time.monotonic()
        word = r.label
        if word == SILENCE:
            self.summary.silence += 1
            return None
        rec = Recognition(word=word, index=r.index, confidence=float(r.confidence),
                          source=r.source, latency_ms=(done - self._captured_at(seg.end)) * 1e3,
                          compute_ms=r.total_us / 1e3, start_s=seg.start / RATE,
                          end_s=seg.end / RATE, private=bool(r.is_private))
        if self.record:
            rec.wav = str(self._save(self.ring.read(seg.start, min(seg.end - seg.start, 2 * WINDOW)),
                                     word))
        self.summary.add(rec)
        return rec

    def _save(self, x: np.ndarray, word: str) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        safe = "".join(c for c in word if c.isalnum() or c in "_-") or "unknown"
        return audio.write_wav(self.record / f"{stamp}_{safe}.wav", x, RATE)

    def flush(self) -> list[Recognition]:
        """Ends the stream: half a second of silence lets a trailing utterance finish."""
        return self.feed(Block(np.zeros(RATE // 2, np.float32), time.monotonic()))

    def run(self, blocks: Iterable[Block], duration_s: Optional[float] = None
            ) -> Iterator[Recognition]:
        """Recognitions as they happen; stops after ``duration_s`` of audio, if given."""
        limit = None if duration_s is None else int(duration_s * RATE)
        for block in blocks:
            if limit is not None and self.ring.total + len(block.samples) > limit:
                block = Block(block.samples[: max(0, limit - self.ring.total)], block.arrival)
            yield from self.feed(block)
            if limit is not None and self.ring.total >= limit:
                yield from self.flush()
                return
