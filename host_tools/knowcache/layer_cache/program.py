"""The staged program: one ExecuTorch program with methods ``stage_0..stage_n``,
``exit_0..exit_{n-1}`` and ``head``, and its manifest entry.

Manifest entry (role "staged"), beside the usual partition fields:

  "staged": {"agreement_target": 0.995, "total_flops": F,
             "stages": [{"method": "stage_0", "flops": F, "us": U}, ...],
             "head": {"method": "head", "flops": F, "us": U},
             "exits": [{"method": "exit_0", "after_stage": 0, "flops": F, "us": U,
                        "feature_dim": D, "classes": C,
                        "thresholds": {"learned": t | null, "confidence": t | null,
                                       "entropy": t | null, "activation": t | null}}]}
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from knowcache import manifest
from knowcache.build import flops
from knowcache.build.lower import quiet_pytree_notes, to_xnnpack
from knowcache.layer_cache.calibrate import ExitOutputs
from knowcache.layer_cache.heads import ExitHead
from knowcache.layer_cache.staging import Stages, reads_input
from knowcache.runtime import StagedModel


@dataclass
class StagedProgram:
    pte: bytes
    stage_flops: list[int]
    exit_flops: list[int]
    head_flops: int


def lower(stages: Stages, heads: list[ExitHead]) -> StagedProgram:
    """The staged program of ``stages`` with ``heads`` as its exits. The stages and
    the head are lowered the first time and kept on ``stages`` (``Stages.lowered``):
    methods are lowered one by one, so a program whose stages come from there has
    the same bytes as one lowered whole, and a retrain (new heads, same stages)
    lowers only its exits (the kws stages: most of a minute here). Stages with the
    same graphs and weights lowered earlier in this process are taken from there
    (`_lowered_stages`), so another learner or export of the same full model does
    not lower them again."""
    from executorch.exir import EdgeProgramManager

    fresh, exits, order = {}, {}, []
    exit_flops = []
    x = stages.input_example
    with torch.no_grad():
        for i, m in enumerate(stages.modules):
            args = (x, stages.input_example) if reads_input(m) else (x,)
            if stages.lowered is None:
                fresh[f"stage_{i}"] = torch.export.export(m.eval(), args)
            order.append(f"stage_{i}")
            x = m(*args)
            if i < len(heads):
                exits[f"exit_{i}"] = torch.export.export(heads[i].eval(), (x,))
                order.append(f"exit_{i}")
                exit_flops.append(flops.count(heads[i], x))
        if stages.lowered is None:
            fresh["head"] = torch.export.export(stages.head.eval(), (x,))
        order.append("head")

    with quiet_pytree_notes():
        if stages.lowered is None:
            stages.lowered = _lowered_stages(fresh, tuple(stages.input_example.shape))
        parts = [stages.lowered] + ([to_xnnpack(exits)] if exits else [])
        methods = {name: p.exported_program(name) for p in parts for name in p.methods}
        whole = EdgeProgramManager({name: methods[name] for name in order},
                                   compile_config=stages.lowered.compile_config)
        buffer = whole.to_executorch().buffer
    return StagedProgram(buffer, list(stages.stage_flops), exit_flops,
                         stages.head_flops)


# Stages lowered in this process, by what was lowered (graphs, weights, input shape):
# learners and exports of the same full model (a server's tasks restarted, several
# learners, the test suite) lower its stages once. Bounded: each holds the stages'
# weights.
_STAGES_CACHE: OrderedDict[str, object] = OrderedDict()
_STAGES_CACHE_SIZE = 4
_STAGES_LOCK = threading.Lock()


def _fingerprint(programs: dict, input_shape: tuple[int, ...]) -> str:
    """A digest of exported programs: each method's graph code, its placeholders'
    shapes and dtypes, and every weight and constant's bytes."""
    h = hashlib.sha256(repr(input_shape).encode())
    for name, ep in programs.items():
        h.update(name.encode())
        h.update(ep.graph_module.code.encode())
        h.update(repr([(n.name, getattr(n.meta.get("val"), "shape", None),
                        getattr(n.meta.get("val"), "dtype", None))
                       for n in ep.graph.nodes if n.op == "placeholder"]).encode())
        for key, value in sorted({**ep.state_dict, **ep.constants}.items()):
            h.update(key.encode())
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu().contiguous()
                h.update(repr((t.dtype, tuple(t.shape))).encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
    return h.hexdigest()


def _lowered_stages(fresh: dict, input_shape: tuple[int, ...]):
    """``to_xnnpack(fresh)``, or the same stages lowered earlier in this process."""
    key = _fingerprint(fresh, input_shape)
    with _STAGES_LOCK:
        if key in _STAGES_CACHE:
            _STAGES_CACHE.move_to_end(key)
            return _STAGES_CACHE[key]
    lowered = to_xnnpack(fresh)
    with _STAGES_LOCK:
        _STAGES_CACHE[key] = lowered
        while len(_STAGES_CACHE) > _STAGES_CACHE_SIZE:
            _STAGES_CACHE.popitem(last=False)
    return lowered


def run_exits(model: StagedModel, x: np.ndarray) -> tuple[list[ExitOutputs], np.ndarray]:
    """Every exit's outputs and the final logits for a batch, through the runtime."""
    per_exit: list[list] = [[] for _ in range(model.num_exits)]
    final = []
    for sample in x:
        outs, logits = model.run_all(sample[None])
        for i, o in enumerate(outs):
            per_exit[i].append(o)
        final.append(logits)
    exits = [ExitOutputs(np.stack([o.logits for o in e]), np.array([o.selector for o in e]),
                         np.stack([o.feature for o in e])) for e in per_exit]
    return exits, np.stack(final)


def measure_us(model: StagedModel, example: np.ndarray, repeats: int = 30
               ) -> tuple[list[float], list[float], float]:
    """Median microseconds of every stage, exit and the head, through the runtime."""
    stage_us = [[] for _ in range(model.num_stages)]
    exit_us = [[] for _ in range(model.num_exits)]
    head_us = []
    whole = example[None] if example.ndim == len(model.input_shape) - 1 else example
    for _ in range(repeats):
        act = whole
        for i in range(model.num_stages):
            t = time.perf_counter()
            act = model.run_stage(i, act, whole)
            stage_us[i].append((time.perf_counter() - t) * 1e6)
            if i < model.num_exits:
                t = time.perf_counter()
                model.run_exit(i, act)
                exit_us[i].append((time.perf_counter() - t) * 1e6)
        t = time.perf_counter()
        model.run_head(act)
        head_us.append((time.perf_counter() - t) * 1e6)
    med = lambda v: float(np.median(v))  # noqa: E731
    return [med(v) for v in stage_us], [med(v) for v in exit_us], med(head_us)


def entry(pid: str, program: StagedProgram, *, labels, input_shape, thresholds: list[dict],
          feature_dims: list[int], stage_us: list[float], exit_us: list[float], head_us: float,
          target: float, version: int = 1, **input_extra) -> dict:
    n = len(program.stage_flops)
    staged = {
        "agreement_target": target,
        "total_flops": int(sum(program.stage_flops) + program.head_flops),
        "stages": [{"method": f"stage_{i}", "flops": int(program.stage_flops[i]),
                    "us": round(stage_us[i], 1)} for i in range(n)],
        "head": {"method": "head", "flops": int(program.head_flops), "us": round(head_us, 1)},
        "exits": [{"method": f"exit_{i}", "after_stage": i, "flops": int(program.exit_flops[i]),
                   "us": round(exit_us[i], 1), "feature_dim": int(feature_dims[i]),
                   "classes": len(labels), "thresholds": thresholds[i]}
                  for i in range(len(program.exit_flops))],
    }
    return manifest.partition_entry(pid, program.pte, role=manifest.Role.STAGED, labels=labels,
                                    file=f"{pid}.pte", input_shape=input_shape, threshold=1.0,
                                    version=version, staged=staged, **input_extra)
