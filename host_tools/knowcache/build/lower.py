"""Lowering PyTorch modules to ExecuTorch programs (.pte).

Every program is lowered with ``to_edge_transform_and_lower`` and the XNNPACK
partitioner, so the device runs delegated kernels. Their manifest entries are
written by ``knowcache.manifest``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from knowcache.atomic import replace_atomically


def lower_to_pte(model: torch.nn.Module, example_inputs: tuple) -> bytes:
    """Exports ``model`` (eval mode; or a quantized GraphModule from
    ``knowcache.build.quantize``) and lowers it to XNNPACK; returns the .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if not isinstance(model, torch.fx.GraphModule):
        model = model.eval()
    with torch.no_grad():
        exported = torch.export.export(model, example_inputs)
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return program.to_executorch().buffer


def save_program(directory: str | os.PathLike, pid: str, pte: bytes) -> str:
    """Writes ``directory/<pid>.pte`` atomically; returns the file name."""
    name = f"{pid}.pte"
    replace_atomically(Path(directory) / name, lambda tmp: tmp.write_bytes(pte))
    return name
