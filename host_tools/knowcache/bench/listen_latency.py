"""Latency and real-time factor of `knowcache listen`'s pipeline on one core.

Synthesizes spoken commands (espeak-ng voices held out from training)
separated by silence and a burst of steady noise, then feeds the recognizer
in 50 ms blocks at real-time pace, as a microphone would, and reports the
median time from the end of each utterance to its result (which includes the
detector's 250 ms hangover: it must hear silence to know a word has ended)
and the real-time factor (processing time / audio time, one ExecuTorch thread).

    python -m knowcache.bench.listen_latency --models models/kws [--cloud URL]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Optional

import numpy as np

RATE = 16000
WORDS = ("yes", "house", "stop", "seven", "left", "happy")


def synth_feed(words=WORDS, *, seed: int = 0, noise_after: int = 1) -> np.ndarray:
    """Float32 audio: 0.5 s silence, then each word followed by 0.5 s of silence; 2 s of
    steady white noise after word number ``noise_after``."""
    from knowcache.data import audio, speech
    variants = speech.split_variants(speech.voice_variants(), speech.SynthConfig(seed=seed))["test"]
    voices = speech.english_voices()
    rng = np.random.default_rng(seed)
    parts = [np.zeros(RATE // 2)]
    for i, w in enumerate(words):
        x = audio.trim(speech.synthesize(w, voices[i % len(voices)], variants[i % len(variants)],
                                         50, 160), RATE)
        parts += [x / (np.abs(x).max() + 1e-9) * 0.5, rng.normal(0, 1e-4, RATE // 2)]
        if i == noise_after:
            parts += [rng.normal(0, 0.05, 2 * RATE), np.zeros(RATE // 3)]
    return np.clip(np.concatenate(parts), -1, 1).astype(np.float32)


def replay(recognizer, audio: np.ndarray, block_s: float = 0.05, paced: bool = True) -> list:
    """Feeds ``audio`` in blocks, at wall-clock pace when ``paced``; returns the recognitions."""
    from knowcache.listen.microphone import Block
    n = int(block_s * RATE)
    out = []
    t0 = time.monotonic()
    for i in range(0, len(audio), n):
        due = t0 + (i + n) / RATE
        if paced and due > time.monotonic():
            time.sleep(due - time.monotonic())
        out += recognizer.feed(Block(audio[i:i + n], time.monotonic()))
    return out + recognizer.flush()


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="models/kws")
    p.add_argument("--model", default="cached")
    p.add_argument("--cloud", default=None)
    a = p.parse_args(argv)
    from knowcache.listen.recognizer import Recognizer
    from knowcache.runtime import Engine, set_compute_threads
    set_compute_threads(1)
    engine = Engine.from_models_dir(a.models, install=[a.model], cloud_url=a.cloud,
                                    fetch_hints=False)
    audio = synth_feed()
    rec = Recognizer(engine)
    results = replay(rec, audio)
    for r in results:
        print(f"{r.word:<10} {r.source:<8} end->result {r.latency_ms:6.1f} ms "
              f"(engine {r.compute_ms:.1f} ms)")
    s = rec.summary.as_dict()
    print(json.dumps({"spoken": list(WORDS), "heard": [r.word for r in results],
                      "median_latency_ms": s["latency_ms_median"],
                      "real_time_factor": s["real_time_factor"], "audio_s": s["audio_s"]}))


if __name__ == "__main__":
    main()
