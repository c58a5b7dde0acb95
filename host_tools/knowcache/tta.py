"""Test-time augmentation in the cloud tier of an image task.

The cloud has no device budget, so it may look at each query more than once:
it runs the full program on several views of the image and averages the
logits (airbench's ``tta_level`` 1 and 2). The programs themselves stay one
view each, so a device running the full program (``device_full``), the staged
program of layer caching and the students' distillation all see the network
as trained. The mode is the manifest's top-level ``cloud_tta`` (from an image task
file's ``network.cloud_tta``); the server (``server/registry.py``),
``knowcache export`` (the full model's figures and the gates' calibration)
and ``knowcache eval`` apply it to every answer of the full model.

    none              1 view
    mirror            the image and its left-right mirror: 2 views
    mirror_translate  those two, weighted 1/2, and the image moved one pixel
                      down-right and one up-left (the uncovered edge reflected),
                      each with its mirror, weighted 1/2 together: 6 views
"""

from __future__ import annotations

from typing import Callable

import numpy as np

VIEWS = {"none": 1, "mirror": 2, "mirror_translate": 6}


def check(mode: str, where: str = "cloud_tta") -> str:
    if mode not in VIEWS:
        raise ValueError(f"{where}: unknown test-time augmentation {mode!r}; one of "
                         f"{', '.join(VIEWS)}")
    return mode


def views(x: np.ndarray, mode: str) -> list[np.ndarray]:
    """The views of an (N, C, H, W) image batch, in the order ``combine`` expects."""
    check(mode)
    if mode == "none":
        return [x]
    if x.ndim != 4:
        raise ValueError(f"test-time views ({mode}) are for image inputs (N, C, H, W), "
                         f"not shape {list(x.shape)}; remove cloud_tta from the manifest")
    out = [x]
    if mode == "mirror_translate":
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
        h, w = x.shape[2:]
        out += [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]   # moved down-right, up-left
    out += [v[..., ::-1] for v in out]
    return [np.ascontiguousarray(v) for v in out]


def combine(logits: list[np.ndarray], mode: str) -> np.ndarray:
    """One set of logits from those of ``views``' views."""
    if mode == "none":
        return logits[0]
    if mode == "mirror":
        return (logits[0] + logits[1]) / 2
    plain = (logits[0] + logits[3]) / 2                  # x and its mirror
    moved = (logits[1] + logits[2] + logits[4] + logits[5]) / 4
    return (plain + moved) / 2


def run_views(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
              mode: str) -> list[np.ndarray]:
    """``model``'s logits on each view of ``x``, in ``views``' order: the first is ``x``
    itself, so a caller that also wants the one-view answer takes it from there."""
    return [model(v) for v in views(x, mode)]


def run(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray, mode: str) -> np.ndarray:
    """``model``'s logits for ``x``, averaged over the views of ``mode``."""
    return combine(run_views(model, x, mode), mode)


def run_rows(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
             mode: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch-1 program over every row of ``x``: (averaged logits, logits on the
    plain image), each (rows, classes); one run per view, none repeated."""
    averaged, plain = [], []
    for row in x:
        per_view = run_views(model, row[None], mode)
        averaged.append(combine(per_view, mode).reshape(-1))
        plain.append(per_view[0].reshape(-1))
    return np.stack(averaged), np.stack(plain)
