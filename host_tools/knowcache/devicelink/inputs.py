"""A file as the input tensor of a task, for a device reached over a serial line.

The host converts by the one input contract (data/input_contract.py) before
sending: any WAV rate, width and channel count, the loudest second of a long
clip, PNG/JPEG images, or raw pixels as knowcache-device reads them.
"""

from __future__ import annotations

from pathlib import Path

from knowcache import tasks
from knowcache.data import input_contract
from knowcache.data.input_contract import InputShape, PreparedInput


def task_input(task: str) -> InputShape:
    """The input every program of a shipped task takes (tasks.py)."""
    spec = tasks.get(task)
    return InputShape(tuple(spec.input_shape), spec.sample_rate,
                      tuple(spec.image_size) if spec.name != "kws" else ())


def read_input(task: str, path: Path) -> PreparedInput:
    """``path`` as ``task``'s float32 input; InputError with the fix when refused."""
    return input_contract.prepare(path, task_input(task))
