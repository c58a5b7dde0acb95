"""Loader for the real Google Speech Commands v2 directory layout.

``<root>/<word>/<speaker>_nohash_<n>.wav`` (16 kHz mono, up to 1 s),
``validation_list.txt`` and ``testing_list.txt`` naming the held-out files,
and ``_background_noise_/*.wav`` for the silence class. Speakers never cross
splits (that is how the official lists were made).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from knowcache.data import audio
from knowcache.data.dataset import Dataset, Split
from knowcache.tasks import KWS, KWS_WORDS, SILENCE

SAMPLE_RATE = 16000


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} does not look like Speech Commands v2")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def load(root: str | Path, *, silence_per_split: tuple[int, int, int] = (2000, 300, 400),
         limit_per_word: Optional[int] = None, seed: int = 0) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    val_list, test_list = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    missing = [w for w in KWS_WORDS if not (root / w).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} lacks word folders: {', '.join(missing)}")
    rows: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in ("train", "val", "test")}
    for label, word in enumerate(KWS_WORDS):
        files = sorted((root / word).glob("*.wav"))[: limit_per_word]
        for f in files:
            rel = f"{word}/{f.name}"
            split = "test" if rel in test_list else "val" if rel in val_list else "train"
            x, rate = audio.read_wav(f)
            if rate != SAMPLE_RATE:
                raise ValueError(f"{f}: {rate} Hz; Speech Commands files are {SAMPLE_RATE} Hz")
            clip = np.zeros(SAMPLE_RATE, np.float32)
            clip[: min(len(x), SAMPLE_RATE)] = x[:SAMPLE_RATE]
            rows[split][0].append(audio.to_int16(clip))
            rows[split][1].append(label)
            rows[split][2].append(f.name.split("_nohash_")[0])
    noise_files = sorted((root / "_background_noise_").glob("*.wav"))
    rng = np.random.default_rng(seed)
    silence = KWS.index(SILENCE)
    for split, count in zip(("train", "val", "test"), silence_per_split):
        for i in range(count if noise_files else 0):
            f = noise_files[i % len(noise_files)]
            x, _ = audio.read_wav(f)
            start = int(rng.integers(0, max(1, len(x) - SAMPLE_RATE)))
            clip = x[start:start + SAMPLE_RATE] * rng.uniform(0.0, 1.0)
            rows[split][0].append(audio.to_int16(np.pad(clip, (0, SAMPLE_RATE - len(clip)))))
            rows[split][1].append(silence)
            rows[split][2].append(f"noise:{f.stem}")
    splits = {s: Split(np.stack(r[0]) if r[0] else np.zeros((0, SAMPLE_RATE), np.int16),
                       np.array(r[1], np.int16), np.array(r[2])) for s, r in rows.items()}
    return Dataset("kws", KWS.labels, splits["train"], splits["val"], splits["test"],
                   f"speech-commands-v2:{root}", {"sample_rate": SAMPLE_RATE})
