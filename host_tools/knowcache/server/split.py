"""The cloud's half of split computing (runtime_cpp/include/knowcache/split.h): a
device that ran the staged program's first stages uploads the int8 activation at
a cut stage k (``POST /v1/{task}/infer?from_stage=k``) and the server resumes the
same staged program from stage k.

The upload must name the staged program version the server runs
(X-Knowcache-Staged-Version) and carry the activation shape stage k takes,
int8 with its per-tensor symmetric scale (X-Knowcache-Scale: value = q * scale).
A cut before a stage that reads the raw model input is refused: the server does
not have that input, and a device must not send it."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowcache.runtime import KnowcacheError, PartitionInfo, StagedModel


class SplitRefused(Exception):
    """An upload the server cannot resume: ``status`` is the HTTP status, the message
    says what to change."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class StagedResume:
    """A task's staged program, loaded to resume uploads, with the activation shape
    each cut takes (found by running zeros through it once)."""

    id: str
    version: int
    model: StagedModel
    cut_shapes: dict[int, list[int]]   # k -> the shape stage k (k == stages: the head) takes

    @classmethod
    def load(cls, path: Path, info: PartitionInfo) -> "StagedResume":
        model = StagedModel.from_file(str(path), info)
        x = np.zeros(model.input_shape, np.float32)
        act, shapes = x, {}
        for k in range(model.num_stages):
            act = model.run_stage(k, act, x if model.stage_reads_input(k) else None)
            shapes[k + 1] = list(act.shape)
        return cls(info.id, info.version, model, shapes)

    def check(self, from_stage: int, version: str | None, dtype: str, shape: str,
              scale: str | None) -> tuple[list[int], float]:
        """(activation shape, scale) of an upload's headers, or SplitRefused."""
        n = self.model.num_stages
        if not 1 <= from_stage <= n:
            raise SplitRefused(400, f"from_stage={from_stage}: staged program {self.id!r} has "
                                    f"stages 0..{n - 1}, so a cut is in 1..{n}")
        readers = [s for s in range(from_stage, n) if self.model.stage_reads_input(s)]
        if readers:
            raise SplitRefused(400, f"from_stage={from_stage}: stage {readers[0]} of {self.id!r} "
                                    "reads the raw model input, which a split upload does not "
                                    f"carry; cut at stage {readers[-1] + 1} or later")
        if version is None or version.strip() != str(self.version):
            raise SplitRefused(409, f"the upload is for staged program version "
                                    f"{version if version is not None else '(none sent)'} but "
                                    f"this server runs {self.id!r} version {self.version}; "
                                    "fetch the manifest and the program again, or upload the "
                                    "raw input")
        if dtype != "int8":
            raise SplitRefused(400, f"X-Knowcache-Dtype is {dtype!r}; a split upload is int8")
        try:
            dims = parse_shape_header(shape)
        except ValueError as e:
            raise SplitRefused(400, str(e)) from None
        want = self.cut_shapes[from_stage]
        if dims != want:
            raise SplitRefused(409, f"shape {dims} does not match the activation stage "
                                    f"{from_stage} of {self.id!r} version {self.version} takes: "
                                    f"{want}")
        try:
            value = float(scale) if scale is not None else math.nan
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise SplitRefused(400, f"X-Knowcache-Scale is {scale!r}; send the activation's "
                                    "per-tensor scale, a finite number > 0")
        return dims, value

    def resume(self, from_stage: int, x: np.ndarray) -> np.ndarray:
        """The full model's logits from the activation stage ``from_stage`` takes."""
        act = x
        for k in range(from_stage, self.model.num_stages):
            act = self.model.run_stage(k, act)
        return self.model.run_head(act)


def parse_shape_header(shape: str) -> list[int]:
    """X-Knowcache-Shape ("1,16000") as dimensions, for raw and split uploads alike;
    ValueError with the sentence for the client when it is not integers."""
    try:
        return [int(d) for d in shape.replace(" ", "").split(",")]
    except ValueError:
        raise ValueError(f"X-Knowcache-Shape {shape!r} is not comma-separated integers") from None


def decode(body: bytes, dims: list[int], scale: float) -> np.ndarray:
    """The float32 activation of an int8 upload (value = q * scale)."""
    return (np.frombuffer(body, np.int8).astype(np.float32) * np.float32(scale)).reshape(dims)


class LazyResume:
    """Loads a task's staged program for resuming on the first split upload (most
    servers never get one), and again after the online learner swaps a new version in."""

    def __init__(self, path: Path | None, info: PartitionInfo | None):
        self._lock = threading.Lock()
        self._path, self._info = path, info
        self._loaded: StagedResume | None = None

    def replace(self, path: Path | None, info: PartitionInfo | None) -> None:
        with self._lock:
            self._path, self._info, self._loaded = path, info, None

    def get(self) -> StagedResume:
        with self._lock:
            if self._info is None:
                raise SplitRefused(404, "this task has no staged program to resume from "
                                        "(`knowcache export --staged`); upload the raw input")
            if self._loaded is None:
                try:
                    self._loaded = StagedResume.load(self._path, self._info)
                except (KnowcacheError, OSError) as e:
                    raise SplitRefused(503, f"the staged program {self._info.id!r} cannot be "
                                            f"loaded to resume from: {e}") from None
            return self._loaded
