"""Rebuild a float32 ``ModelRecord`` from its exported ExecuTorch program.

The shipped ``models/<task>/full.pte`` is the only copy of the full models'
weights a clone has (only the programs ship).
Layer caching needs the network in PyTorch to cut it into stages, so this
reads the program back: ExecuTorch's own deserializer gives the XNNPACK
delegate payloads and the named constant data, ``flatc`` (shipped in the
executorch wheel) turns each delegate's XNNGraph into JSON, and the conv and
fully-connected nodes, in execution order, are mapped onto the network's conv
and linear modules: the ResNet of an image task, or the kws ``KwsNet`` (the
speech_embedding trunk, found by its known weights; the head ensemble's 1-D
convolutions; the spectrogram branch's square ones; then each head's branch
projection and classifier). The front ends' DFT and filterbank products are
fully-connected nodes too, told apart by their constants; a program lowered
as one delegate and one lowered as several order the nodes differently, and
both are read. Batch norm was
folded into the convs at export, so each BatchNorm2d becomes the identity
plus the folded bias. The input normalization constants (of the image, or of
the kws spectrogram branch) are two of the program's scalar constants: the
pair that reproduces its logits.

``recover`` always checks the rebuilt network against the program through
the knowcache runtime and refuses to return a record that disagrees.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from knowcache.models.dft import FactorizedDFT
from knowcache.models.nets import (FULL_CONFIGS, EmbeddingHeadConfig, HeadEnsemble, KwsNet,
                                   ModelRecord, build_net, image_config)
from knowcache.models.resnet import AirbenchBlock
from knowcache.models.spectrogram import SPECTROGRAM_CONFIG, SpectrogramNet
from knowcache.models.speech_embedding import EMBEDDING_DIM, SpeechEmbedding

_CONV_NODES = ("XNNConv2d", "XNNDepthwiseConv2d")
_XNN_HEADER_MAGIC = b"XH00"


class RecoveryError(RuntimeError):
    pass


def _flatc() -> Path:
    path = resources.files("executorch.data.bin").joinpath("flatc")
    return Path(str(path))


def _xnn_schema() -> Path:
    return Path(str(resources.files("executorch.backends.xnnpack.serialization")
                    .joinpath("schema.fbs")))


def _xnngraph(payload: bytes, work: Path, name: str) -> dict:
    if payload[4:8] != _XNN_HEADER_MAGIC:
        raise RecoveryError("delegate payload is not an XNNPACK graph (no XH00 header)")
    offset = int.from_bytes(payload[10:14], "little")
    size = int.from_bytes(payload[14:18], "little")
    graph = work / f"{name}.bin"
    graph.write_bytes(payload[offset:offset + size])
    subprocess.run([str(_flatc()), "--json", "--strict-json", "--raw-binary", "-o", str(work),
                    str(_xnn_schema()), "--", str(graph)], check=True, capture_output=True)
    text = (work / f"{name}.json").read_text()
    # flatc writes infinities as bare `inf`, which JSON does not have.
    text = re.sub(r":\s*(-?)inf\b", r": \g<1>1e999", text)
    return json.loads(text)


def _tensors(program_path: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[float]]:
    """(node type, weight, bias) for every conv and FC node in execution order,
    and the program's scalar constants."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(program_path.read_bytes())
    program = pte.program
    store = pte.named_data
    named = ({k: bytes(store.buffers[entry.buffer_index]) for k, entry in store.pte_data.items()}
             if store else {})
    if not named:
        raise RecoveryError(f"{program_path} keeps no named constant data: not an XNNPACK "
                            "float32 program written by knowcache export")
    plan = program.execution_plan[0]
    nodes: list[tuple[str, np.ndarray, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, instruction in enumerate(plan.chains[0].instructions):
            args = instruction.instr_args
            if not hasattr(args, "delegate_index"):
                continue
            delegate = plan.delegates[args.delegate_index]
            payload = program.backend_delegate_data[delegate.processed.index].data
            graph = _xnngraph(bytes(payload), Path(tmp), f"g{i}")
            values = [v["xvalue_union"] for v in graph["xvalues"]]
            keys = [c.get("named_key") for c in graph.get("constant_data", [])]

            def constant(value_id: int) -> np.ndarray | None:
                if value_id >= len(values):      # XNNPACK's "no value" (a conv without bias)
                    return None
                v = values[value_id]
                index = v.get("constant_buffer_idx", 0)
                if not index or not keys[index]:
                    raise RecoveryError(f"XNN value {value_id} is not a named constant")
                array = np.frombuffer(named[keys[index]], dtype=np.float32)
                return array.reshape(v["dims"]).copy()

            for node in graph["xnodes"]:
                kind, body = node["xnode_union_type"], node["xnode_union"]
                if kind in _CONV_NODES or kind == "XNNFullyConnected":
                    nodes.append((kind, constant(body["filter_id"]), constant(body["bias_id"])))
    float_scalar_buffers = sorted({
        v.val.data_buffer_idx for v in plan.values
        if type(v.val).__name__ == "Tensor" and v.val.data_buffer_idx > 0
        and list(v.val.sizes) == [] and int(v.val.scalar_type) == 6})  # 6: float32
    scalars = [float(np.frombuffer(bytes(program.constant_buffer[i].storage)[:4], np.float32)[0])
               for i in float_scalar_buffers]
    return nodes, scalars


def _filter_shape(node: tuple) -> tuple[int, ...]:
    """A conv node's filter as PyTorch's Conv2d weight shape (out, in, kh, kw)."""
    kind, w, _ = node
    out, kh, kw, inp = w.shape
    return (inp, out, kh, kw) if kind == "XNNDepthwiseConv2d" else (out, inp, kh, kw)


def _torch_filter(node: tuple) -> torch.Tensor:
    """A conv node's filter as PyTorch's Conv2d weight. XNNPACK keeps filters as
    [out, kh, kw, in]; depthwise as [1, kh, kw, out]; a 1-D convolution as a 2-D
    one of width 1."""
    kind, w, _ = node
    w = torch.from_numpy(w)
    return w.permute(3, 0, 1, 2) if kind == "XNNDepthwiseConv2d" else w.permute(0, 3, 1, 2)


def _copy_conv(conv: nn.Conv1d | nn.Conv2d, node: tuple, norm: nn.BatchNorm2d | None = None
               ) -> None:
    _, _, b = node
    w = _torch_filter(node)
    if isinstance(conv, nn.Conv1d) and w.shape[3] == 1:
        w = w[..., 0]
    if tuple(w.shape) != tuple(conv.weight.shape):
        raise RecoveryError(f"conv filter {tuple(w.shape)} does not fit {tuple(conv.weight.shape)}")
    if (b is None) != (conv.bias is None and norm is None):
        raise RecoveryError(f"conv {tuple(w.shape)}: the program and the network disagree "
                            "on whether it has a bias")
    conv.weight.copy_(w)
    if norm is not None:       # batch norm was folded into the conv at export
        norm.weight.fill_(1.0)
        norm.bias.copy_(torch.from_numpy(b))
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)
    elif b is not None:
        conv.bias.copy_(torch.from_numpy(b))


def _copy_fc(fc: nn.Linear, node: tuple) -> None:
    _, w, b = node
    if tuple(w.shape) != tuple(fc.weight.shape) or b is None:
        raise RecoveryError(f"FC weight {w.shape} does not fit {tuple(fc.weight.shape)}")
    fc.weight.copy_(torch.from_numpy(w))
    fc.bias.copy_(torch.from_numpy(b))


@functools.lru_cache(maxsize=1)
def _front_end_matrices() -> tuple[np.ndarray, ...]:
    """Every constant matrix the kws front ends multiply by (the factorized DFT's
    stages, the two mel filterbanks), as a fully-connected node keeps it."""
    from knowcache.models.speech_embedding import N_FFT, GoogleMel
    from knowcache.models.spectrogram import LogMel
    dft, log_mel = FactorizedDFT(16, 32), LogMel()
    mats = [dft.stage1, dft.stage2, GoogleMel(N_FFT).mel, log_mel.bank]
    return tuple(m.numpy() for m in mats)


def _is_front_end(node: tuple) -> bool:
    _, w, _ = node
    return any(w.shape == m.T.shape and np.allclose(w, m.T) or
               w.shape == m.shape and np.allclose(w, m) for m in _front_end_matrices())


def _split(nodes: list) -> tuple[list, list]:
    """The conv nodes and the fully-connected nodes of the network, not of a front
    end: its DFT and filterbank products are FC nodes too, found by their constants
    (or, in programs of earlier front ends, as every FC node before the first conv)."""
    first_conv = next((i for i, n in enumerate(nodes) if n[0] in _CONV_NODES), len(nodes))
    return ([n for n in nodes if n[0] in _CONV_NODES],
            [n for i, n in enumerate(nodes) if n[0] == "XNNFullyConnected"
             and i > first_conv and not _is_front_end(n)])


def _load_weights(model: nn.Module, nodes: list) -> None:
    """A ResNet (VisionNet, SpectrogramNet) from its conv and FC nodes."""
    if any(isinstance(m, AirbenchBlock) for m in model.backbone.modules()):
        return _load_airbench_weights(model.backbone, nodes)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    fcs = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    conv_nodes, fc_nodes = _split(nodes)
    if len(conv_nodes) != len(convs) or len(fc_nodes) != len(fcs) or len(norms) != len(convs):
        raise RecoveryError(f"the program has {len(conv_nodes)} convs and {len(fc_nodes)} "
                            f"FC layers; the network expects {len(convs)} and {len(fcs)}")
    with torch.no_grad():
        for conv, norm, node in zip(convs, norms, conv_nodes):
            _copy_conv(conv, node, norm)
        for fc, node in zip(fcs, fc_nodes):
            _copy_fc(fc, node)


def _load_airbench_weights(backbone: nn.Module, nodes: list) -> None:
    """airbench's network: the whitening stem, then per block its first conv (no
    bias), the norm after the max-pool (it cannot fold into that conv: a per-channel
    scale and shift, a 1x1 depthwise conv), the second conv (its norm folded in);
    the classifier."""
    conv_nodes, fc_nodes = _split(nodes)
    blocks = [m for m in backbone.stages if isinstance(m, AirbenchBlock)]
    if len(conv_nodes) != 1 + 3 * len(blocks) or len(fc_nodes) != 1:
        raise RecoveryError(f"the program has {len(conv_nodes)} convs and {len(fc_nodes)} FC "
                            f"layers; an airbench network of {len(blocks)} blocks has "
                            f"{1 + 3 * len(blocks)} and 1")
    with torch.no_grad():
        _copy_conv(backbone.stem[0], conv_nodes[0])
        for i, block in enumerate(blocks):
            first, norm, second = conv_nodes[1 + 3 * i:4 + 3 * i]
            _copy_conv(block.conv1, first)
            kind, scale, shift = norm
            if kind != "XNNDepthwiseConv2d" or scale.shape[:3] != (1, 1, 1) or (scale <= 0).any():
                raise RecoveryError(f"airbench block {i}: expected its norm as a positive "
                                    f"per-channel scale, found {kind} {scale.shape}")
            # the norm's weight stays 1 (NormNoScale): the scale is 1 / sqrt(var + eps)
            block.bn1.running_mean.zero_()
            block.bn1.running_var.copy_(torch.from_numpy(1.0 / scale.reshape(-1) ** 2
                                                         - block.bn1.eps))
            block.bn1.bias.copy_(torch.from_numpy(shift))
            _copy_conv(block.conv2, second, block.bn2)
        _copy_fc(backbone.fc, fc_nodes[0])


@functools.lru_cache(maxsize=1)
def _trunk_weights() -> tuple[np.ndarray, ...]:
    """The speech_embedding trunk's conv weights (frozen: known to every program)."""
    embedding = SpeechEmbedding()
    return tuple(c.weight.detach().numpy() for c in [*embedding.convs, embedding.out])


@dataclass
class _KwsNodes:
    """The nodes of a kws full program by part, each in program order: the trunk's
    convs, the head's 1-D convs (a kernel of 3 x 1), the spectrogram branch's
    square ones, and the head's FC layers."""
    trunk: list
    head: list
    branch: list
    fcs: list


def _kws_nodes(nodes: list) -> _KwsNodes | None:
    """``nodes`` by part, or None when they hold no speech_embedding trunk (a bare
    spectrogram ResNet: the kws full model before it)."""
    conv_nodes, fc_nodes = _split(nodes)
    trunk = _trunk_weights()
    for start in range(len(conv_nodes) - len(trunk) + 1):
        run = conv_nodes[start:start + len(trunk)]
        if all(_filter_shape(n) == w.shape and np.allclose(_torch_filter(n).numpy(), w)
               for n, w in zip(run, trunk)):
            rest = conv_nodes[:start] + conv_nodes[start + len(trunk):]
            return _KwsNodes(trunk=run, head=[n for n in rest if _filter_shape(n)[2:] == (3, 1)],
                             branch=[n for n in rest if _filter_shape(n)[2:] != (3, 1)],
                             fcs=fc_nodes)
    return None


def _kws_config(parts: _KwsNodes, classes: int) -> EmbeddingHeadConfig | None:
    """The config of a kws full model (speech_embedding trunk, head ensemble on it
    and a spectrogram branch) with these nodes; None when they are not one."""
    head, branch = parts.head, parts.branch
    members = sum(1 for n in head if _filter_shape(n)[1] == EMBEDDING_DIM) if head else 0
    if not members or not branch or len(head) != 2 * members or len(parts.fcs) != 2 * members:
        return None
    hidden, side_hidden = _filter_shape(head[0])[0], parts.fcs[0][1].shape[0]
    stem = branch[0][1].shape[0] if branch[0][0] == "XNNConv2d" else branch[0][1].shape[3]
    resnet = SPECTROGRAM_CONFIG
    if stem != resnet.stem_width:
        resnet = resnet.scaled(stem / resnet.stem_width)
    full = FULL_CONFIGS["kws"]
    return replace(full, hidden=hidden, side_hidden=side_hidden, members=members,
                   spectrogram={"resnet": resnet.to_dict(), "classes": classes})


def _head_orders(members: int) -> list[list[tuple[int, int]]]:
    """Where each member's [conv1, conv2] sits among the head's conv nodes, for
    either order a program may hold them in: every member's first conv then every
    second one (the ensemble lowered in several delegates), or member by member
    (one delegate). ``recover`` keeps the one that reproduces the program."""
    grouped = [(i, members + i) for i in range(members)]
    interleaved = [(2 * i, 2 * i + 1) for i in range(members)]
    return [grouped] if grouped == interleaved else [grouped, interleaved]


def _load_kws_weights(net: KwsNet, parts: _KwsNodes, head_order: int = 0) -> None:
    """The trunk's convs, the head's convs (``_head_orders``), the spectrogram
    branch's convs; the FC layers are each head's branch projection and
    classifier in turn."""
    trunk = net.backbone.trunk
    heads = list(net.backbone.head.members) if isinstance(net.backbone.head, HeadEnsemble) \
        else [net.backbone.head]
    branch = net.spectrogram.backbone
    branch_convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    branch_norms = [m for m in branch.modules() if isinstance(m, nn.BatchNorm2d)]
    fcs = [fc for h in heads for fc in (h.side, h.fc)]
    if (len(parts.head) != 2 * len(heads) or len(parts.branch) != len(branch_convs)
            or len(parts.fcs) != len(fcs)):
        convs = len(parts.trunk) + len(parts.head) + len(parts.branch)
        raise RecoveryError(f"the program has {convs} convs and {len(parts.fcs)} FC layers; "
                            f"the kws network expects "
                            f"{len(parts.trunk) + 2 * len(heads) + len(branch_convs)} and "
                            f"{len(fcs)}")
    per_member = [(parts.head[a], parts.head[b])
                  for a, b in _head_orders(len(heads))[head_order]]
    with torch.no_grad():
        for conv, node in zip([*trunk.convs, trunk.out], parts.trunk):
            _copy_conv(conv, node)
        for h, (first, second) in zip(heads, per_member):
            _copy_conv(h.conv1, first)
            _copy_conv(h.conv2, second)
        for conv, norm, node in zip(branch_convs, branch_norms, parts.branch):
            _copy_conv(conv, node, norm)
        for fc, node in zip(fcs, parts.fcs):
            _copy_fc(fc, node)


def recover(program_path: str | Path, task: str, labels: list[str], check_inputs: np.ndarray,
            atol: float = 1e-3) -> ModelRecord:
    """The full model of ``task`` rebuilt from ``program_path``; ``check_inputs``
    (a batch of real inputs) must give the program's logits within ``atol``."""
    from knowcache.runtime import Partition

    program_path = Path(program_path)
    nodes, scalars = _tensors(program_path)
    if len(scalars) < 2:
        raise RecoveryError(f"expected the input mean and std among the program's scalar "
                            f"constants, found {len(scalars)} scalars")
    program = Partition.from_file(str(program_path))
    theirs = np.stack([program.run(x[None]).reshape(-1) for x in check_inputs])
    parts = _kws_nodes(nodes) if task == "kws" else None
    kws = _kws_config(parts, len(labels)) if parts is not None else None
    if kws is not None:
        return _recover_kws(program_path, kws, labels, parts, scalars, check_inputs, theirs, atol)
    # A kws program with a bare ResNet is a spectrogram branch (the previous kws full model).
    if task == "kws":
        config = SPECTROGRAM_CONFIG
    else:
        from knowcache import tasks
        config = image_config(tasks.get(task))
    kind, stem, _ = next(n for n in nodes if n[0] in _CONV_NODES)
    channels, stem_width = (1, stem.shape[3]) if kind == "XNNDepthwiseConv2d" else (
        stem.shape[3], stem.shape[0])
    # The full model of the task, or the same network made narrower (--quick builds).
    if stem_width != config.stem_width:
        config = config.scaled(stem_width / config.stem_width)
    config = replace(config, in_channels=int(channels))
    best = (np.inf, None, None, None)
    # The input mean and std are two of the scalars (the front end has its
    # own), unnamed: the pair that reproduces the program's logits wins.
    for norm in itertools.permutations(scalars, 2):
        model = (SpectrogramNet(config, len(labels), *norm) if task == "kws"
                 else build_net(task, config, len(labels), norm))
        _load_weights(model, nodes)
        model.eval()
        with torch.no_grad():
            ours = model(torch.from_numpy(check_inputs)).numpy()
        err = float(np.abs(ours - theirs).max())
        if err < best[0]:
            best = (err, model, norm, ours)
    err, model, norm, ours = best
    if not err <= atol or not (ours.argmax(1) == theirs.argmax(1)).all():
        raise RecoveryError(f"the rebuilt network differs from {program_path} by {err:.3g} "
                            f"(tolerance {atol}); the program is not this task's ResNet")
    return ModelRecord(task=task, role="full", name="full", labels=list(labels), config=config,
                       norm=norm, state_dict=model.state_dict(),
                       metrics={"recovered_from": program_path.name, "max_abs_error": err})


def _recover_kws(program_path: Path, config: EmbeddingHeadConfig, labels: list[str],
                 parts: _KwsNodes, scalars: list[float], check_inputs: np.ndarray,
                 theirs: np.ndarray, atol: float) -> ModelRecord:
    """The kws full model (``KwsNet``): its front ends are fixed by code, its weights
    come from the nodes (the head's in either order, ``_head_orders``), and the
    spectrogram branch's feature mean and std are two of the program's scalar
    constants: the order and the pair that reproduce its logits win."""
    x = torch.from_numpy(check_inputs)
    best = (np.inf, None)
    for order in range(len(_head_orders(config.members))):
        net = KwsNet(config, len(labels))
        try:
            _load_kws_weights(net, parts, order)
        except RecoveryError as e:      # the shapes rule this order out
            error = e
            continue
        net.eval()
        with torch.no_grad():
            # Only the branch reads the pair: the embeddings of two inputs are computed once.
            embeddings = net.embeddings(x[:2])
            for mean, std in itertools.permutations(scalars, 2):
                if std <= 0:
                    continue
                net.spectrogram.feature_mean.fill_(mean)
                net.spectrogram.feature_std.fill_(std)
                ours = net.backbone.head(embeddings, net.spectrogram.pooled(x[:2])).numpy()
                err = float(np.abs(ours - theirs[:2]).max())
                if err < best[0]:
                    best = (err, (order, mean, std))
    if best[1] is None:
        raise error
    order, mean, std = best[1]
    net = KwsNet(config, len(labels))
    _load_kws_weights(net, parts, order)
    net.eval()
    net.spectrogram.feature_mean.fill_(mean)
    net.spectrogram.feature_std.fill_(std)
    with torch.no_grad():
        ours = net(x).numpy()
    err = float(np.abs(ours - theirs).max())
    if not err <= atol or not (ours.argmax(1) == theirs.argmax(1)).all():
        raise RecoveryError(f"the rebuilt kws network differs from {program_path} by {err:.3g} "
                            f"(tolerance {atol}); the program is not this knowcache's kws model")
    return ModelRecord(task="kws", role="full", name="full", labels=list(labels), config=config,
                       norm=(0.0, 1.0), state_dict=net.state_dict(),
                       metrics={"recovered_from": program_path.name, "max_abs_error": err})
