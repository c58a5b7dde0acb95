"""Getting a task's data set: from the cache directory, or made and cached."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from knowcache.atomic import replace_atomically
from knowcache.data.dataset import Dataset, Split, cache_dir

Progress = Optional[Callable[[str, int, int], None]]

QUICK_SPEECH = (12, 4, 4)
QUICK_IMAGES = (3000, 600, 1000)


def speech(*, seed: int = 0, quick: bool = False, per_word: Optional[tuple[int, int, int]] = None,
           speech_commands: Optional[Path] = None, progress: Progress = None,
           refresh: bool = False) -> Dataset:
    """Synthesized keywords (cached by configuration, with any recordings added to
    it by `add_recordings`), or the real Speech Commands v2."""
    if speech_commands is not None:
        from knowcache.data import speech_commands as sc
        return sc.load(speech_commands, limit_per_word=40 if quick else None, seed=seed)
    from knowcache.data import speech as synth
    path = _speech_path(seed, quick, per_word)
    if path.is_file() and not refresh:
        return Dataset.load(path)
    ds = synth.generate(_speech_config(seed, quick, per_word), progress=progress)
    ds.save(path)
    return ds


def _speech_config(seed: int, quick: bool, per_word: Optional[tuple[int, int, int]]):
    from knowcache.data import speech as synth
    return synth.SynthConfig(seed=seed, per_word=per_word or (QUICK_SPEECH if quick else
                                                               synth.SynthConfig.per_word))


def _speech_path(seed: int, quick: bool, per_word: Optional[tuple[int, int, int]]) -> Path:
    return cache_dir() / "speech" / f"{_speech_config(seed, quick, per_word).key()}.npz"


def add_recordings(folder: Path, *, seed: int = 0, quick: bool = False,
                   per_word: Optional[tuple[int, int, int]] = None, progress: Progress = None
                   ) -> tuple[Dataset, int]:
    """Folds ``folder/<word>/*.wav`` into the synthesized set's train split (saved back)."""
    from knowcache.data import recordings
    ds = speech(seed=seed, quick=quick, per_word=per_word, progress=progress)
    ds, added = recordings.fold_into(ds, folder)
    if added:
        ds.save(_speech_path(seed, quick, per_word))
    return ds, added


def images(*, seed: int = 0, quick: bool = False, fashion_mnist: Optional[Path] = None,
           cifar10: Optional[Path] = None, refresh: bool = False) -> Dataset:
    """Fashion-MNIST (Debian's idx files, cached as .npz) or a CIFAR-10 folder."""
    from knowcache.data import images as img
    if cifar10 is not None:
        ds = img.cifar10(cifar10, seed=seed)
    else:
        path = cache_dir() / "images" / f"fashion-mnist-s{seed}.npz"
        if path.is_file() and not refresh and fashion_mnist is None:
            ds = Dataset.load(path)
        else:
            ds = img.fashion_mnist(fashion_mnist or img.FASHION_MNIST_DIR, seed=seed)
            ds.save(path)
    return shrink(ds, QUICK_IMAGES, seed) if quick else ds


def shrink(ds: Dataset, sizes: tuple[int, int, int], seed: int) -> Dataset:
    """A seeded random subset of each split (for --quick runs)."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, n in zip(Dataset.SPLITS, sizes):
        sp = ds.split(name)
        parts.append(sp.subset(np.sort(rng.permutation(len(sp))[:n])))
    return Dataset(ds.task, ds.labels, *parts, source=ds.source + " (subset)", meta=ds.meta)


QUICK_SPEECH_TEST = 25


def test_split(task: str, *, seed: int = 0, quick: bool = False, speech_commands: Optional[Path] = None,
               fashion_mnist: Optional[Path] = None, cifar10: Optional[Path] = None,
               progress: Progress = None) -> Dataset:
    """A data set whose test split benchmarks run on (train and val may be empty).

    kws: the test split of the default synthesized set when it is cached, else
    only test clips are synthesized (same held-out voice variants; 100 per
    class, 25 with ``quick``). vision: Fashion-MNIST's test split (or CIFAR-10's).
    """
    if task == "vision":
        return images(seed=seed, fashion_mnist=fashion_mnist, cifar10=cifar10)
    if task != "kws":
        return _image_task(task)
    if speech_commands is not None:
        return speech(seed=seed, quick=quick, speech_commands=speech_commands)
    if _speech_path(seed, False, None).is_file():
        return speech(seed=seed)
    n = QUICK_SPEECH_TEST if quick else _speech_config(seed, False, None).per_word[2]
    return speech(seed=seed, per_word=(0, 0, n), progress=progress)


def for_task(task: str, **kwargs) -> Dataset:
    if task == "kws":
        return speech(**{k: v for k, v in kwargs.items() if k in
                         ("seed", "quick", "per_word", "speech_commands", "progress", "refresh")})
    if task == "vision":
        return images(**{k: v for k, v in kwargs.items() if k in
                         ("seed", "quick", "fashion_mnist", "cifar10", "refresh")})
    ds = _image_task(task)
    return shrink(ds, QUICK_IMAGES, kwargs.get("seed", 0)) if kwargs.get("quick") else ds


def _image_task(task: str) -> Dataset:
    """An image task's data, as `knowcache data images` ingested it."""
    from knowcache import tasks
    from knowcache.data import image_tasks
    tasks.get(task)          # an unknown name gets the error that lists the known ones
    return image_tasks.load_data(task)


# Speaker-disjoint parts of a folder of real recordings: fitted on (train),
# calibrated on (val: gate thresholds, the "other" bias), reported on (test).
REAL_PARTS = {"train": 0.6, "val": 0.15, "test": 0.25}
REAL_GROUP = "real:"


def with_real(ds: Dataset, folder: Path, *, parts: dict[str, float] = REAL_PARTS,
              seed: int = 0, copies: int = 0) -> Dataset:
    """``ds`` with the labelled recordings in ``folder/<label>/*.wav`` added, each
    speaker to one split only (its group is ``real:<speaker>``). The training
    part also gets ``copies`` perturbed takes of each of its recordings
    (``audio.perturb``), drawn from ``seed``; val and test stay as recorded."""
    from knowcache.data import folders
    if copies < 0:
        raise ValueError(f"copies must be 0 or more, not {copies}")
    clips = folders.load(folder, ds.labels)
    split = folders.speaker_split(clips, parts, seed)
    merged, info = {}, {}
    for name in Dataset.SPLITS:
        sp, add = ds.split(name), split.get(name)
        if add is None or not len(add):
            merged[name] = sp
            continue
        info[name] = {"clips": int(len(add)), "speakers": sorted(set(add.speaker.tolist()))}
        x, y, speakers = _perturbed(add, copies, seed) if name == "train" and copies else \
            (add.x, add.y, add.speaker)
        group = np.array([REAL_GROUP + s for s in speakers])
        merged[name] = Split(np.concatenate([sp.x, x]),
                             np.concatenate([sp.y, y.astype(sp.y.dtype)]),
                             np.concatenate([sp.group.astype(str), group]))
    meta = {**ds.meta, "real": {"folder": str(Path(folder).resolve()), "parts": parts,
                                "seed": seed, "copies": copies, "added": info}}
    more = f", {copies} perturbed copies of each training clip" if copies else ""
    return Dataset(ds.task, ds.labels, merged["train"], merged["val"], merged["test"],
                   f"{ds.source} + real recordings ({Path(folder).name}, by speaker{more})", meta)


def _perturbed(clips, copies: int, seed: int):
    """The recordings followed by ``copies`` perturbed takes of each, as int16."""
    from knowcache.data import audio
    from knowcache.data.speech import SAMPLE_RATE
    rng = np.random.default_rng([seed, 7919])
    x = clips.x.astype(np.float32) / 32768.0
    takes = [audio.to_int16(audio.perturb(clip, SAMPLE_RATE, rng))
             for _ in range(copies) for clip in x]
    return (np.concatenate([clips.x, np.stack(takes)]), np.tile(clips.y, copies + 1),
            np.tile(clips.speaker, copies + 1))


def is_real(split: Split) -> np.ndarray:
    """Which samples of a split are real recordings added by ``with_real``."""
    return np.char.startswith(split.group.astype(str), REAL_GROUP)


def with_piper(ds: Dataset, *, per_word: int, seed: int = 0, progress: Progress = None,
               refresh: bool = False) -> Dataset:
    """``ds`` with ``per_word`` piper-tts clips of every keyword appended to its
    training split (made once, then cached by configuration)."""
    from knowcache.data import piper
    if per_word < 1:
        raise ValueError(f"per_word must be 1 or more, not {per_word}")
    config = piper.PiperConfig(seed=seed, per_word=per_word)
    path = cache_dir() / "speech" / f"{config.key()}.npz"
    if path.is_file() and not refresh:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    else:
        x, y = piper.generate(config, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda tmp: np.savez(tmp, x=x, y=y), suffix=".tmp.npz")
    tr = ds.train
    train = Split(np.concatenate([tr.x, x]), np.concatenate([tr.y, y.astype(tr.y.dtype)]),
                  np.concatenate([tr.group.astype(str), np.full(len(y), piper.GROUP)]))
    meta = {**ds.meta, "piper": {"config": asdict(config), "clips": int(len(y))}}
    return Dataset(ds.task, ds.labels, train, ds.val, ds.test,
                   f"{ds.source} + piper-tts joe ({len(y)} clips)", meta)


def is_piper(split: Split) -> np.ndarray:
    """Which samples of a split are piper-tts clips added by ``with_piper``."""
    from knowcache.data.piper import GROUP
    return split.group.astype(str) == GROUP
