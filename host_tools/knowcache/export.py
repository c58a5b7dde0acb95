"""Lowering PyTorch modules to ExecuTorch programs (.pte) and writing manifests.

Every program is lowered with ``to_edge_transform_and_lower`` and the XNNPACK
partitioner, so the device runs delegated kernels. Manifests are written in
the schema the C++ runtime reads (runtime_cpp/include/knowcache/manifest.h)
and are parsed back through that same parser before they are saved, so a
manifest this module writes is one the device accepts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import torch

from knowcache import _runtime
from knowcache.atomic import replace_atomically

MANIFEST_SCHEMA_VERSION = 1
ROLES = ("full", "cached", "partition", "generic", "staged")


def lower_to_pte(model: torch.nn.Module, example_inputs: tuple) -> bytes:
    """Exports ``model`` (eval mode; or a quantized GraphModule from
    ``knowcache.quantize``) and lowers it to XNNPACK; returns the .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if not isinstance(model, torch.fx.GraphModule):
        model = model.eval()
    with torch.no_grad():
        exported = torch.export.export(model, example_inputs)
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return program.to_executorch().buffer


def partition_entry(pid: str, pte: bytes, *, role: str, labels: Sequence[str], file: str,
                    input_shape: Sequence[int], dtype: str = "float32",
                    threshold: float = 0.5, other_label: Optional[str] = None,
                    sample_rate: Optional[int] = None,
                    image_size: Optional[Sequence[int]] = None, version: int = 1,
                    **extra) -> dict:
    """One manifest entry for a program's bytes (size and sha256 computed here)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    spec: dict = {"dtype": dtype, "shape": [int(d) for d in input_shape]}
    if sample_rate:
        spec["sample_rate"] = int(sample_rate)
    if image_size:
        spec["image_size"] = [int(d) for d in image_size]
    entry = {
        "id": pid, "version": int(version), "role": role, "file": file,
        "labels": list(labels), "input": spec, "threshold": float(threshold),
        "bytes": len(pte), "sha256": _runtime.sha256_hex(pte),
    }
    if other_label is not None:
        entry["other_label"] = other_label
    entry.update(extra)
    return entry


def write_manifest(directory: str | os.PathLike, task: str, labels: Sequence[str],
                   partitions: Sequence[dict], *, version: int = 1, **extra) -> Path:
    """Validates and writes ``directory/manifest.json``; returns its path."""
    doc = {"schema_version": MANIFEST_SCHEMA_VERSION, "task": task, "version": int(version),
           "labels": list(labels), "partitions": list(partitions)}
    doc.update(extra)
    text = json.dumps(doc, indent=2) + "\n"
    _runtime.Manifest.parse(text)  # raises InvalidInputError naming the bad field
    path = Path(directory) / "manifest.json"
    replace_atomically(path, lambda tmp: tmp.write_bytes(text.encode()))
    return path


def save_program(directory: str | os.PathLike, pid: str, pte: bytes) -> str:
    """Writes ``directory/<pid>.pte`` atomically; returns the file name."""
    name = f"{pid}.pte"
    replace_atomically(Path(directory) / name, lambda tmp: tmp.write_bytes(pte))
    return name
