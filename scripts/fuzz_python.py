"""atheris (coverage-guided, libFuzzer's engine) on the Python parsers of untrusted
bytes: a parser may refuse its input only with the error it documents; any other
exception is a finding and stops the run with the input that caused it.

    .venv/bin/python scripts/fuzz_python.py TARGET [--work DIR] [libFuzzer flags, e.g. -runs=20000]
    .venv/bin/python scripts/fuzz_python.py --list

With ``--work DIR`` the run's corpus is DIR/TARGET, started from the target's seed
files (``SEEDS``; new inputs are added there, never to the repository).

`make fuzz` runs every target; tests/test_fuzz.py runs each briefly.
"""

from __future__ import annotations

import inspect
import json
import shutil
import sys
from pathlib import Path

import atheris
import numpy as np

from knowcache.data import audio, image_tasks, images, input_contract
from knowcache.devicelink import frames
from knowcache.runtime import KnowcacheError, Manifest


def _instrument(*modules) -> None:
    """Coverage for the parsers' own functions. The editable install loads knowcache
    through its own finder, which atheris's import hook does not see, and
    ``instrument_all`` would take minutes over torch."""
    for module in modules:
        for name, obj in list(vars(module).items()):
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                setattr(module, name, atheris.instrument_func(obj))


_instrument(audio, image_tasks, images, input_contract, frames)


def _wav(data: bytes) -> None:
    """A WAV file as `knowcache infer` / `listen --file` / `eval` read it."""
    try:
        x = input_contract.waveform(data, "fuzz.wav")
    except input_contract.InputError:
        return
    assert x.ndim == 1 and len(x) > 0


def _image(data: bytes) -> None:
    """An image file converted to a task's (C, H, W) input."""
    try:
        x = input_contract.image_pixels(data, "fuzz.png", (3, 16, 16))
    except input_contract.InputError:
        return
    assert x.shape == (3, 16, 16)


def _idx(data: bytes) -> None:
    """An idx array (Fashion-MNIST's format)."""
    try:
        images.read_idx(data, "fuzz.idx")
    except ValueError:
        return


def _frame(data: bytes) -> None:
    """One serial-protocol frame from the device (COBS, header, CRC)."""
    try:
        frame = frames.parse(data)
    except frames.FrameError:
        return
    assert frames.parse(frames.encode(frame)[:-1]) == frame


def _manifest(data: bytes) -> None:
    """A manifest as the runtime's binding parses it (a fetched or flashed one)."""
    try:
        m = Manifest.parse(data.decode("utf-8", "replace"))
    except KnowcacheError:
        return
    assert len(m.labels) >= 2


def _task_file(data: bytes) -> None:
    """An image task file's fields checked against a folder of four classes."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(doc, dict):
        return
    labels = ("blue", "green", "red", "yellow")
    try:
        out = image_tasks._resolve(doc, labels, np.array([4, 3, 2, 1]), (3, 16, 16),
                                   "fuzz.json")
    except ValueError:
        return
    assert set(out["popularity"]) == set(labels)
    image_tasks.spec_from_dict("fuzz", out)       # a resolved file always makes a task


TARGETS = {"wav": _wav, "image": _image, "idx": _idx, "frame": _frame, "manifest": _manifest,
           "task_file": _task_file}


REPO = Path(__file__).resolve().parents[1]
SEEDS = {"wav": REPO / "runtime_cpp/device/fuzz/corpus_wav",
         "manifest": REPO / "runtime_cpp/fuzz/corpus_manifest",
         **{t: REPO / "scripts/fuzz_corpus" / t for t in ("image", "idx", "frame", "task_file")}}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] == "--list":
        print("\n".join(TARGETS))
        return
    name, args = sys.argv[1], sys.argv[2:]
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    if "--work" in args:
        i = args.index("--work")
        corpus = Path(args[i + 1]) / name
        corpus.mkdir(parents=True, exist_ok=True)
        for seed in SEEDS[name].iterdir():
            if not (corpus / seed.name).exists():
                shutil.copy(seed, corpus / seed.name)
        args = [*args[:i], *args[i + 2:], str(corpus)]
    atheris.Setup([sys.argv[0], *args], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
