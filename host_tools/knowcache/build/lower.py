"""Lowering PyTorch modules to ExecuTorch programs (.pte).

Every program is lowered with ``to_edge_transform_and_lower`` and the XNNPACK
partitioner, so the device runs delegated kernels. Their manifest entries are
written by ``knowcache.manifest``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from knowcache.atomic import replace_atomically


@contextlib.contextmanager
def quiet_pytree_notes():
    """Silences the FutureWarning torch's pytree prints from inside ExecuTorch's
    lowering and emitting (``isinstance(treespec, LeafSpec)``, about 20 an export,
    nothing for a user to act on; the CLI filters it too, a spawned export worker
    or a library caller did not)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        yield


def to_xnnpack(programs):
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner: one exported
    program, or a dict of them by method name."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with quiet_pytree_notes():
        return to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])


def lower_to_pte(model: torch.nn.Module, example_inputs: tuple) -> bytes:
    """Exports ``model`` (eval mode; or a quantized GraphModule from
    ``knowcache.build.quantize``) and lowers it to XNNPACK; returns the .pte bytes."""
    if not isinstance(model, torch.fx.GraphModule):
        model = model.eval()
    with torch.no_grad():
        exported = torch.export.export(model, example_inputs)
    program = to_xnnpack(exported)
    with quiet_pytree_notes():
        return program.to_executorch().buffer


def save_program(directory: str | os.PathLike, pid: str, pte: bytes) -> str:
    """Writes ``directory/<pid>.pte`` atomically; returns the file name."""
    name = f"{pid}.pte"
    replace_atomically(Path(directory) / name, lambda tmp: tmp.write_bytes(pte))
    return name
