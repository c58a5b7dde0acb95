"""int8 post-training quantization through ExecuTorch's XNNPACK quantizer (PT2E).

Only the network's ``backbone`` is quantized (static, symmetric, per-channel
weights); input handling (the kws log-mel front end, image normalization)
stays float32, so host and device compute the same features. The backbone
is exported and quantized on its own, then composed with the float input
stage into one module that `knowcache.build.lower.lower_to_pte` lowers as a whole.
"""

from __future__ import annotations

import functools
import operator

import torch
from torch import nn


class QuantizedNet(nn.Module):
    """Float ``features`` of the original net followed by an int8 backbone graph."""

    def __init__(self, net: nn.Module, backbone: torch.fx.GraphModule):
        super().__init__()
        self.net = net
        self.qbackbone = backbone

    def train(self, mode: bool = True) -> "QuantizedNet":
        # Quantized graphs reject train()/eval(); the float part is always eval.
        self.training = False
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qbackbone(self.net.features(x))


@functools.cache
def _ptq_quantizer_class() -> type:
    """XNNPACK's quantizer without its quantization-aware-training patterns (a
    convolution followed by batch norm). ``prepare_pt2e`` folds every batch norm into
    its convolution before it annotates, so those patterns can never match
    post-training quantization; yet the quantizer traces each of them, about 4 s a
    program on a 2-core CPU. The annotations, and so the programs, are the same."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class PtqXnnpackQuantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if not p.is_qat]
    return PtqXnnpackQuantizer


_NORM = torch.ops.aten.batch_norm.default


def _norms_as_affine(graph: torch.fx.GraphModule) -> int:
    """Rewrites each batch norm left in a prepared graph as ``x * scale + shift``
    (per channel; the same float numbers to rounding); returns how many.

    ``prepare_pt2e`` folds every norm that follows a convolution; the others (the
    airbench block's, after its max-pool) stay, unannotated, between float values.
    With any norm in the graph, ``convert_pt2e`` traces its 96 quantization-aware
    conv + norm patterns to fold them (``_fold_conv_bn_qat``): about 30 s a program
    on a 2-core CPU, and none can match after post-training preparation. As a
    scale and shift (what XNNPACK lowers such a norm to anyway) nothing is traced."""
    def tensor(node):       # a get_attr node's tensor (dotted path); None stays None
        return None if node is None else operator.attrgetter(node.target)(graph)

    count = 0
    for node in list(graph.graph.nodes):
        if node.target is not _NORM or node.args[5]:       # a norm in training mode stays
            continue
        x = node.args[0]
        weight, bias, mean, var = map(tensor, node.args[1:5])
        eps = node.args[7]
        scale = torch.rsqrt(var + eps) * (1.0 if weight is None else weight)
        shift = (0.0 if bias is None else bias) - mean * scale
        shape = (1, -1) + (1,) * (node.meta["val"].dim() - 2)
        names = (f"_norm_{count}_scale", f"_norm_{count}_shift")
        graph.register_buffer(names[0], scale.reshape(shape).contiguous())
        graph.register_buffer(names[1], shift.reshape(shape).contiguous())
        with graph.graph.inserting_before(node):
            mul = graph.graph.call_function(torch.ops.aten.mul.Tensor,
                                            (x, graph.graph.get_attr(names[0])))
            add = graph.graph.call_function(torch.ops.aten.add.Tensor,
                                            (mul, graph.graph.get_attr(names[1])))
        mul.meta["val"] = add.meta["val"] = node.meta["val"]
        node.replace_all_uses_with(add)
        graph.graph.erase_node(node)
        count += 1
    if count:
        graph.graph.eliminate_dead_code()
        graph.recompile()
    return count


@torch.no_grad()
def quantize_int8(model: nn.Module, calibration: torch.Tensor, batch: int = 32) -> QuantizedNet:
    """``model`` (KwsNet / VisionNet) with its backbone quantized to int8, calibrated on
    ``calibration`` (float inputs as the device feeds them)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = model.eval()
    feats = torch.cat([model.features(calibration[i:i + batch])
                       for i in range(0, len(calibration), batch)])
    quantizer = _ptq_quantizer_class()().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model.backbone, (feats[:1],)).module()
    prepared = prepare_pt2e(graph, quantizer)
    for i in range(len(feats)):   # the exported graph is batch 1, as on the device
        prepared(feats[i:i + 1])
    _norms_as_affine(prepared)
    return QuantizedNet(model, convert_pt2e(prepared))
