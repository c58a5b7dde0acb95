"""Plain folders of labelled recordings: ``<root>/<label>/*.wav``.

The layout of Speech Commands (``<word>/<speaker>_nohash_<n>.wav``), of
``knowcache listen --record`` after sorting, and of ``../shared/real-voices``.
Each clip is resampled to 16 kHz, mixed down to mono and cut to its loudest
second (or centred in one), the same rule as ``knowcache listen``. The speaker
of a clip is the part of its name before ``_nohash_`` when there is one, else
the file itself (so clips with no speaker never share a group).

Speaker-disjoint splits (``speaker_split``) hash each speaker's name, so a
speaker falls in the same part whatever else is in the folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowcache.data import audio, input_contract
from knowcache.data.input_contract import IMAGE_SUFFIXES, RATE, loudest_second

fit_second = loudest_second    # the name callers knew; the rule lives in input_contract


def speaker_of(path: Path) -> str:
    name = path.name
    return name.split("_nohash_")[0] if "_nohash_" in name else f"{path.parent.name}/{path.stem}"


@dataclass
class LabelledClips:
    x: np.ndarray           # (N, 16000) int16
    y: np.ndarray           # (N,) label index
    speaker: np.ndarray     # (N,) str
    files: list[Path]
    sha256: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> "LabelledClips":
        idx = np.flatnonzero(mask)
        return LabelledClips(self.x[idx], self.y[idx], self.speaker[idx],
                             [self.files[i] for i in idx], [self.sha256[i] for i in idx])


def load(root: str | Path, labels: tuple[str, ...], *, allow_unknown: bool = False
         ) -> LabelledClips:
    """Every ``root/<label>/*.wav``. Folders not named by a label are an error
    (or skipped with ``allow_unknown``); so are WAV files at the top level."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    loose = sorted(root.glob("*.wav"))
    if loose:
        raise ValueError(f"{root} has WAV files at its top level ({loose[0].name}, ...): move each "
                         f"into a folder named by its label, e.g. {root}/yes/")
    clips, ys, speakers, files, digests = [], [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in labels:
            if allow_unknown:
                continue
            raise ValueError(f"{folder}: {folder.name!r} is not a label of this task; folders "
                             f"must be named by one of: {', '.join(labels)}")
        for f in sorted(folder.glob("*.wav")):
            data = f.read_bytes()
            x = input_contract.waveform(data, str(f), RATE)
            clips.append(audio.to_int16(loudest_second(x)))
            ys.append(labels.index(folder.name))
            speakers.append(speaker_of(f))
            files.append(f)
            digests.append(hashlib.sha256(data).hexdigest())
    if not clips:
        raise ValueError(f"{root} has no <label>/*.wav recordings")
    return LabelledClips(np.stack(clips), np.array(ys, np.int16), np.array(speakers), files,
                         digests)


def load_task_folder(root: str | Path, labels: tuple[str, ...],
                     image_size: tuple[int, int, int] | None = None) -> LabelledClips:
    """A task's labelled folder: audio clips, or images converted to ``image_size``."""
    if image_size is None:
        return load(root, labels)
    return load_images(root, labels, image_size)


def leave_out(clips: LabelledClips, speakers) -> tuple[LabelledClips, LabelledClips]:
    """(clips of other speakers, clips of ``speakers``)."""
    mine = np.isin(clips.speaker, sorted(speakers))
    return clips.subset(~mine), clips.subset(mine)


def speaker_part(speaker: str, fractions: dict[str, float], seed: int = 0) -> str:
    """Which part (``fractions`` keys, in order) a speaker falls in, by hashing its name."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{speaker}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, frac in fractions.items():
        edge += frac
        if h < edge:
            return name
    return list(fractions)[-1]


def speaker_split(clips: LabelledClips, fractions: dict[str, float], seed: int = 0
                  ) -> dict[str, LabelledClips]:
    """Speaker-disjoint parts of ``clips`` (e.g. fit / calibrate / report)."""
    parts = np.array([speaker_part(s, fractions, seed) for s in clips.speaker])
    return {name: clips.subset(parts == name) for name in fractions}


def load_images(root: str | Path, labels: tuple[str, ...], image_size: tuple[int, int, int]
                ) -> LabelledClips:
    """Every ``root/<label>/*.png|jpg``, converted to the task's (C, H, W) uint8 input
    (grey or RGB, resized). The "speaker" of an image is its file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    xs, ys, files, digests = [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in labels:
            raise ValueError(f"{folder}: {folder.name!r} is not a label of this task; folders "
                             f"must be named by one of: {', '.join(labels)}")
        for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            data = f.read_bytes()
            xs.append(input_contract.image_pixels(data, str(f), image_size))
            ys.append(labels.index(folder.name))
            files.append(f)
            digests.append(hashlib.sha256(data).hexdigest())
    if not xs:
        raise ValueError(f"{root} has no <label>/*.png|jpg images")
    return LabelledClips(np.stack(xs), np.array(ys, np.int16),
                         np.array([f"{p.parent.name}/{p.name}" for p in files]), files, digests)
