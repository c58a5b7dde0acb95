"""Synthesized Speech Commands: the 35 keywords spoken by espeak-ng.

A *speaker* is an espeak-ng English voice (accent) with a voice variant
(m1, f3, croak, ...); each clip also gets its own pitch and speed. Splits are
made by **variant**: a variant in the test split is never heard in training,
in any accent. Each clip is trimmed, placed at a random offset in 1 s
(time shift), and augmented (gain, synthetic room reverberation, background
noise at a random SNR); the silence class is background noise alone.

Everything derives from one seed, and each clip from (seed, split, index), so
the result does not depend on worker count or order. flite and festival
voices are never used here: they are kept for out-of-distribution tests.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from knowcache.data import audio
from knowcache.data.dataset import Dataset, Split
from knowcache.tasks import KWS, SILENCE

SAMPLE_RATE = 16000
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    per_word: tuple[int, int, int] = (400, 60, 100)   # clips per class in train, val, test
    test_fraction: float = 0.15                        # of variants
    val_fraction: float = 0.10
    pitch: tuple[int, int] = (25, 75)                  # espeak-ng -p range
    speed: tuple[int, int] = (120, 210)                # espeak-ng -s range, words per minute
    reverb_prob: float = 0.3
    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (5.0, 30.0)

    def key(self) -> str:
        """A short name for the cache file, unique per configuration."""
        digest = hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]
        return f"espeak-s{self.seed}-{sum(self.per_word)}-{digest}"


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if not path:
        raise RuntimeError("espeak-ng is not installed; run `make setup` (Debian: apt-get install "
                           "espeak-ng)")
    return path


def _list(kind: str) -> list[list[str]]:
    res = subprocess.run([espeak_binary(), f"--voices={kind}"], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise RuntimeError(f"`espeak-ng --voices={kind}` failed (exit {res.returncode}): "
                           f"{res.stderr.strip()}")
    out = res.stdout.splitlines()[1:]
    return [line.split() for line in out if line.strip()]


def english_voices() -> list[str]:
    """espeak-ng's own English voices (not mbrola ones, which need extra data)."""
    voices = sorted({row[1] for row in _list("en") if len(row) >= 5 and row[4].startswith("gmw/")})
    if not voices:
        raise RuntimeError("espeak-ng lists no English voices; is espeak-ng-data installed?")
    return voices


def voice_variants() -> list[str]:
    return sorted({row[4].split("/")[-1] for row in _list("variant") if len(row) >= 5})


def split_variants(variants: list[str], config: SynthConfig) -> dict[str, list[str]]:
    """Disjoint train / val / test variant lists, fixed by the seed."""
    order = list(np.random.default_rng(config.seed).permutation(sorted(variants)))
    n_test = max(1, int(round(config.test_fraction * len(order))))
    n_val = max(1, int(round(config.val_fraction * len(order))))
    if len(order) < n_test + n_val + 1:
        raise RuntimeError(f"only {len(order)} espeak-ng variants; need at least "
                           f"{n_test + n_val + 1} to split by voice")
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def synthesize(word: str, voice: str, variant: str, pitch: int, speed: int) -> np.ndarray:
    """One word from espeak-ng, as float32 at 16 kHz."""
    res = subprocess.run([espeak_binary(), "-v", f"{voice}+{variant}", "-p", str(pitch), "-s",
                          str(speed), "--stdout", word], capture_output=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"espeak-ng failed for {word!r} with {voice}+{variant}: "
                           f"{res.stderr.decode(errors='replace').strip()}")
    x, rate = audio.espeak_wav_samples(res.stdout)
    return audio.resample(x, rate, SAMPLE_RATE)


@dataclass(frozen=True)
class ClipPlan:
    label: int
    voice: str
    variant: str
    pitch: int
    speed: int
    seed: int


def plan_split(split: str, voices: list[str], variants: list[str], count: int,
               config: SynthConfig) -> list[ClipPlan]:
    rng = np.random.default_rng([config.seed, SPLIT_IDS[split], 0])
    plans = []
    for label in range(len(KWS.labels)):
        for i in range(count):
            plans.append(ClipPlan(
                label=label, voice=str(rng.choice(voices)), variant=str(rng.choice(variants)),
                pitch=int(rng.integers(*config.pitch, endpoint=True)),
                speed=int(rng.integers(*config.speed, endpoint=True)),
                seed=int(rng.integers(0, 2**31))))
    return plans


def render(plan: ClipPlan, config: SynthConfig) -> np.ndarray:
    """The augmented 1 s clip for a plan, as int16."""
    rng = np.random.default_rng(plan.seed)
    n = SAMPLE_RATE
    label = KWS.labels[plan.label]
    kind = str(rng.choice(audio.NOISE_KINDS))
    if label == SILENCE:
        level = 0.0 if rng.random() < 0.1 else 10 ** rng.uniform(-3.5, -1.0)
        return audio.to_int16(audio.noise(kind, n, SAMPLE_RATE, rng) * level)
    x = audio.trim(synthesize(label, plan.voice, plan.variant, plan.pitch, plan.speed), SAMPLE_RATE)
    x = audio.place(x, n, rng)
    x = x / (np.max(np.abs(x)) + 1e-9) * rng.uniform(0.05, 0.9)          # gain
    if rng.random() < config.reverb_prob:
        x = audio.reverberate(x, SAMPLE_RATE, rng)
    if rng.random() < config.noise_prob:
        x = audio.mix_noise(x, audio.noise(kind, n, SAMPLE_RATE, rng), rng.uniform(*config.snr_db))
    return audio.to_int16(np.clip(x, -1.0, 1.0))


def generate(config: SynthConfig = SynthConfig(), *, workers: Optional[int] = None,
             progress: Optional[Callable[[str, int, int], None]] = None) -> Dataset:
    """Synthesizes the whole data set (train / val / test split by voice variant)."""
    voices, variants = english_voices(), voice_variants()
    by_split = split_variants(variants, config)
    splits = {}
    for split, count in zip(("train", "val", "test"), config.per_word):
        plans = plan_split(split, voices, by_split[split], count, config)
        x = np.zeros((len(plans), SAMPLE_RATE), np.int16)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, clip in enumerate(pool.map(lambda p: render(p, config), plans)):
                x[i] = clip
                if progress:
                    progress(split, i + 1, len(plans))
        y = np.array([p.label for p in plans], np.int16)
        group = np.array([f"{p.voice}+{p.variant}" for p in plans])
        splits[split] = Split(x, y, group)
    meta = {"config": asdict(config), "voices": voices, "variants": by_split,
            "sample_rate": SAMPLE_RATE}
    return Dataset("kws", KWS.labels, splits["train"], splits["val"], splits["test"],
                   f"espeak-ng {config.key()}", meta)
