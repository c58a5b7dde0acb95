"""`knowcache export --staged`: the full model as a staged program with cache
heads distilled from it (or cold heads for online learning), calibrated, and
added to the task's manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from knowcache import manifest
from knowcache.atomic import replace_atomically
from knowcache.build import training
from knowcache.data import Dataset, store
from knowcache.data.dataset import model_input
from knowcache.layer_cache import calibrate, distill, program
from knowcache.layer_cache.heads import ExitHead, HeadConfig
from knowcache.layer_cache.heads import make as make_head
from knowcache.layer_cache.staging import Stages, split
from knowcache.models import ModelRecord
from knowcache.runtime import StagedModel

STAGED_ID = "staged"
DEFAULT_TARGET = 0.998     # the whole system's agreement with the full model (lower bound)


@dataclass
class StagedBuild:
    task: str
    labels: list[str]
    record: ModelRecord
    stages: Stages
    heads: list[ExitHead]
    input_extra: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> list[int]:
        return list(self.stages.input_example.shape)


def prepare(record: ModelRecord, input_shape: list[int], input_extra: dict,
            head_config: Optional[HeadConfig] = None, seed: int = 0) -> StagedBuild:
    """The record cut into stages, with fresh (cold) heads on all but the last.
    The heads' initial weights depend only on ``seed`` (not on the global RNG)."""
    net = record.build()
    stages = split(net, torch.zeros(*input_shape))
    heads = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for shape, proposed in zip(stages.activation_shapes[:-1], stages.head_configs):
            heads.append(make_head(shape, len(record.labels), head_config or proposed,
                                   stages.model_head).eval())
    return StagedBuild(record.task, list(record.labels), record, stages, heads, input_extra)


def features_and_teacher(build: StagedBuild, x: np.ndarray, batch: int = 256,
                         augment: Optional[torch.Generator] = None
                         ) -> tuple[list[np.ndarray], np.ndarray]:
    """Compact features at every exit and the full model's probabilities (PyTorch);
    with ``augment``, of each input through the training augmentation."""
    feats: list[list[np.ndarray]] = [[] for _ in build.heads]
    probs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(model_input(build.task, x[i:i + batch]))
            if augment is not None:
                xb = training.augment(build.task, xb, augment)
            acts, logits = build.stages.forward(xb)
            for j, head in enumerate(build.heads):
                feats[j].append(head.feature(acts[j]).numpy())
            probs.append(torch.softmax(logits, 1).numpy())
    return [np.concatenate(f) for f in feats], np.concatenate(probs)


def fit_heads(build: StagedBuild, features: list[np.ndarray], teacher: np.ndarray,
              config: distill.DistillConfig = distill.DistillConfig(), log=print,
              selector_data: tuple[list[np.ndarray], np.ndarray] | None = None) -> None:
    for i, head in enumerate(build.heads):
        sel = (selector_data[0][i], selector_data[1]) if selector_data else None
        distill.fit(head, features[i], teacher, config, selector_data=sel)
        with torch.no_grad():
            agree = (head.from_feature(torch.from_numpy(features[i]))[0].argmax(1).numpy()
                     == teacher.argmax(1)).mean()
        log(f"exit_{i}: distilled on {len(teacher)} samples, agrees with the full model on "
            f"{agree:.1%} of them")


def export_program(build: StagedBuild, directory: Path, thresholds: list[dict],
                   target: float, version: int, calib_x: Optional[np.ndarray] = None,
                   pid: str = STAGED_ID, calib_real: Optional[np.ndarray] = None,
                   calib_selectors_saw: Optional[np.ndarray] = None) -> tuple[dict, Path]:
    """Lowers, writes ``<pid>.v<version>.pte`` and returns its manifest entry.

    With ``calib_x`` the thresholds are calibrated here, on the exported
    program's own outputs (``calib_real``: which of them are real recordings,
    whose answers must meet the target on their own; ``calib_selectors_saw``:
    which of them trained the selectors, left out of the learned gate's
    calibration); stage and exit times are measured either way."""
    lowered = program.lower(build.stages, build.heads)
    name = f"{pid}.v{version}.pte"
    path = directory / name
    replace_atomically(path, lambda tmp: tmp.write_bytes(lowered.pte))
    dims = [h.feature_dim for h in build.heads]
    no_thresholds = [{k: None for k in calibrate.GATES} for _ in build.heads]

    def make_entry(thr, us):
        e = program.entry(pid, lowered, labels=build.labels, input_shape=build.input_shape,
                          thresholds=thr, feature_dims=dims, stage_us=us[0], exit_us=us[1],
                          head_us=us[2], target=target, version=version, **build.input_extra)
        e["file"] = name
        return e

    zero_us = ([0.0] * len(build.stages.modules), [0.0] * len(build.heads), 0.0)
    model = load(make_entry(no_thresholds, zero_us), directory)
    us = program.measure_us(model, np.zeros(build.input_shape[1:], np.float32))
    if calib_x is not None:
        exits, final = program.run_exits(model, calib_x)
        answered, own = exit_costs(lowered.stage_flops, lowered.exit_flops,
                                   lowered.head_flops)
        n = len(calib_x)
        real = np.zeros(n, bool) if calib_real is None else calib_real
        saw = np.zeros(n, bool) if calib_selectors_saw is None else calib_selectors_saw
        kw = dict(costs=answered, exit_costs=own)
        thresholds = calibrate.calibrate(exits, final.argmax(1), target, subset=real,
                                         kinds=tuple(g for g in calibrate.GATES if g != "learned"),
                                         **kw)
        unseen = [calibrate.ExitOutputs(e.logits[~saw], e.selector[~saw], e.feature[~saw])
                  for e in exits]
        learned = calibrate.calibrate(unseen, final[~saw].argmax(1), target, subset=real[~saw],
                                      kinds=("learned",), **kw)
        for t, lt in zip(thresholds, learned):
            t.update(lt)
    return make_entry(thresholds or no_thresholds, us), path


def exit_costs(stage_flops: list[int], exit_flops: list[int], head_flops: int = 0
               ) -> tuple[list[float], list[float]]:
    """As fractions of the whole model (stages and head): what a query answered
    at exit i has spent in the stages (exit i sits after stage i), and what
    running exit i costs."""
    whole = float(sum(stage_flops) + head_flops)
    cum = np.cumsum(stage_flops)
    return ([float(c / whole) for c in cum[:len(exit_flops)]],
            [float(f / whole) for f in exit_flops])


def load(entry: dict, directory: Path) -> StagedModel:
    """The runtime's StagedModel for a manifest entry (parsed by the C++ parser)."""
    return StagedModel.from_file(str(directory / entry["file"]), manifest.info_of(entry))


def run(record: ModelRecord, data: Dataset, out: Path, *, input_shape: list[int],
        input_extra: dict, target: float = DEFAULT_TARGET, cold: bool = False,
        train_samples: Optional[int] = None, seed: int = 0,
        log: Callable[[str], None] = print) -> dict:
    """Builds, exports and registers the staged program in ``out``; returns its entry.
    ``train_samples``: the training inputs the heads learn on (default: the
    network's ``ExitTraining``)."""
    build = prepare(record, input_shape, input_extra, seed=seed)
    recipe = build.stages.exit_training
    calib_x = calib_real = calib_saw = None
    if not cold:
        rng = np.random.default_rng(seed)
        n = train_samples or recipe.samples
        idx = rng.permutation(len(data.train))[:n]
        copies = recipe.augmented_copies
        log(f"computing exit features of {len(idx)} training inputs"
            + (f" and {copies} augmented cop{'y' if copies == 1 else 'ies'} of each" if copies
               else "") + " (labels unused)...")
        x_train = data.train.x[idx]
        gen = torch.Generator().manual_seed(seed)
        parts = [features_and_teacher(build, x_train)]
        parts += [features_and_teacher(build, x_train, augment=gen) for _ in range(copies)]
        feats = [np.concatenate([p[0][i] for p in parts]) for i in range(len(build.heads))]
        teacher = np.concatenate([p[1] for p in parts])
        # Half the validation split trains the selectors (the full model is
        # surer on its own training inputs than on new ones, so agreement
        # learned there would be optimistic). Every validation input calibrates
        # every gate but the learned one, which only the half its selectors did
        # not see calibrates: the other gates never read the selectors, and
        # twice the inputs narrow the spread of their thresholds. For kws, the
        # few real validation speakers are all needed as well.
        val = rng.permutation(len(data.val))
        half = len(val) // 2
        fit_heads(build, feats, teacher, recipe.distill, log=log,
                  selector_data=features_and_teacher(build, data.val.x[val[:half]]))
        calib_x = model_input(build.task, data.val.x[val])
        calib_real = store.is_real(data.val)[val]
        calib_saw = np.arange(len(val)) < half
        log(f"calibrating thresholds on {len(calib_x)} validation inputs "
            f"({int(calib_real.sum())} real recordings; the learned gate on the "
            f"{int((~calib_saw).sum())} its selectors did not see) for >= {target:.1%} "
            "agreement...")
    current = manifest.load(out)
    old = current.entry(STAGED_ID)
    # Never below the manifest's next version either: a plain `knowcache export` drops
    # the staged entry but bumps the manifest, so a staged program exported after it
    # does not restart at 1 under a version (and file name) devices already saw.
    version = max(old["version"] + 1 if old else 1, current.version + 1)
    entry, path = export_program(build, out, [], target, version, calib_x,
                                 calib_real=calib_real, calib_selectors_saw=calib_saw)
    manifest.update(out, entry)
    if old and old["file"] != entry["file"]:
        (out / old["file"]).unlink(missing_ok=True)
    for i, e in enumerate(entry["staged"]["exits"]):
        log(f"exit_{i} after stage {e['after_stage']}: {e['flops'] / 1e3:.0f} kFLOPs, "
            f"thresholds {e['thresholds']}")
    log(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) and its manifest entry")
    return entry
