"""Online layer caching in the cloud tier: learn the cache heads from live
traffic, without labels (automated layer caching, GATI).

For every request it answers, the server runs the staged program whole
(``StagedModel.run_all``) and records each exit's compact feature, what the
serving version's exit answered (its logits and selector: the baseline a new
version is verified against) and the full model's logits (plus a few raw
inputs, to check exports). Requests answered elsewhere (the model replicas of
`knowcache serve --ray`) are recorded with ``record``: their features, full
logits and inputs; what the serving version's exits answer is computed here.
Every ``retrain_every`` requests a background worker:

1. splits the recorded requests into train / calibrate / verify slices,
2. distills fresh heads on the train slice (the full model is the teacher),
3. calibrates every gate's thresholds on the calibrate slice,
4. verifies on the verify slice, against the serving version on the same
   requests: with ``verify_gate``, fidelity must reach ``fidelity_floor`` (or
   the serving version's, if lower) and FLOPs saved must not drop by more than
   ``savings_slack``; the exported program, run by the C++ runtime on recorded
   inputs, must give the heads' and the full model's outputs,
5. swaps it in atomically: new ``staged.v<N>.pte``, manifest rewritten with
   the partition and manifest versions bumped, in-memory model replaced;
   devices fetch it through the manifest like any partition.

A retrain that fails verification is rolled back: its file is deleted and
the serving version stays.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from scipy.special import softmax

from knowcache import manifest
from knowcache.layer_cache import build as staged_build
from knowcache.layer_cache import calibrate, distill
from knowcache.layer_cache.calibrate import ExitOutputs
from knowcache.layer_cache.heads import ExitHead
from knowcache.runtime import StagedModel

RAW_INPUTS_KEPT = 32


@dataclass
class OnlineConfig:
    retrain_every: int = 250        # requests between retrains
    buffer: int = 4000              # most recent recorded requests kept
    calibrate_fraction: float = 0.25
    verify_fraction: float = 0.25
    target: float = staged_build.DEFAULT_TARGET     # calibration: the system's agreement
    confidence_z: float = 0.0       # calibration slices are small; the verify slice guards
    per_exit: float = calibrate.PER_EXIT_AGREEMENT   # each exit's own answers agree >= this
    fidelity_floor: float = 0.995   # a new version must keep this fidelity (or the serving one's)
    verify_gate: str = "confidence"
    savings_slack: float = 0.05      # a new version may save this much less than the serving one
    # ... and is only published if it saves this much more (or is more faithful);
    # negative: every version that passes verification is published
    min_gain: float = 0.01
    export_tolerance: float = 1e-3
    epochs: int = 30
    seed: int = 0
    signing_key: Optional[Path] = None  # Ed25519 private key: each published manifest is signed

    def __post_init__(self) -> None:
        if self.retrain_every < 20:
            raise ValueError("retrain_every must be at least 20 requests")
        if self.buffer < self.retrain_every:
            raise ValueError("buffer must hold at least retrain_every requests")
        if not 0.0 < self.target <= 1.0 or not 0.0 < self.fidelity_floor <= 1.0:
            raise ValueError("target and fidelity_floor must be in (0, 1]")
        if not 0.0 <= self.savings_slack <= 1.0 or not -1.0 <= self.min_gain <= 1.0:
            raise ValueError("savings_slack must be in [0, 1] and min_gain in [-1, 1] "
                             "(fractions of the whole model's FLOPs)")
        if self.verify_gate not in calibrate.GATES:
            raise ValueError(f"verify_gate {self.verify_gate!r} is not a gate; use one of "
                             f"{', '.join(calibrate.GATES)}")


@dataclass
class RetrainReport:
    version: int                 # the version tried
    samples: int
    accepted: bool
    reason: str
    outcome: str = "rolled_back"   # published | rolled_back | unchanged
    fidelity: float = 0.0        # learned gate on the verify slice
    serving_fidelity: float = 0.0
    serving_hit_rate: float = 0.0
    serving_flops_saved: float = 0.0
    hit_rate: float = 0.0        # fraction of verify requests answered by an exit
    flops_saved: float = 0.0     # on the verify slice, as a fraction of the whole model
    thresholds: list = field(default_factory=list)


Tamper = Callable[[list[ExitHead]], None]


class OnlineLearner:
    """One task's staged program, answered with and learned from.

    ``on_swap(entry, manifest_version)`` is called after a new version is in
    place (the server refreshes its view of the manifest there)."""

    def __init__(self, directory: Path, build: staged_build.StagedBuild,
                 config: OnlineConfig = OnlineConfig(),
                 on_swap: Optional[Callable[[dict, int], None]] = None,
                 log: Callable[[str], None] = lambda _m: None, background: bool = True):
        self.directory = Path(directory)
        self.build = build
        self.config = config
        self.on_swap = on_swap
        self.log = log
        self.background = background
        self._lock = threading.Lock()
        # Per exit and request: (compact feature, the serving version's logits,
        # its selector); the answers are recomputed when a version is swapped in.
        self._exits: list[deque] = [deque(maxlen=config.buffer) for _ in build.heads]
        self._logits: deque = deque(maxlen=config.buffer)   # the full model's answers
        self._raw: deque = deque(maxlen=RAW_INPUTS_KEPT)
        self._since = 0
        self._retraining = False      # set under _lock when a retrain is due, cleared after it
        self._worker: Optional[threading.Thread] = None
        self.reports: list[RetrainReport] = []
        self.tamper: Optional[Tamper] = None     # tests: corrupt the next retrain's heads
        self.entry = self._current_entry()
        self.model = staged_build.load(self.entry, self.directory)

    # -- serving ---------------------------------------------------------
    def _current_entry(self) -> dict:
        return manifest.load(self.directory).require(manifest.Role.STAGED)

    @property
    def version(self) -> int:
        return int(self.entry["version"])

    def answer(self, x: np.ndarray) -> np.ndarray:
        """The full model's logits for ``x`` (one input); records what the exits saw."""
        exits, logits = self.model.run_all(x)
        rows = [[(np.asarray(e.feature, np.float32), np.asarray(e.logits, np.float32),
                  float(e.selector))] for e in exits]
        self._append(lambda: rows, logits[None], np.array(x, copy=True)[None])
        return logits

    def record(self, features: list[np.ndarray], logits: np.ndarray, raw: np.ndarray) -> None:
        """Records requests answered elsewhere (a Ray replica, maybe still on an older
        version): per exit, the compact features (requests x feature size); the full
        model's logits (requests x classes); the inputs. What the serving version's exits
        answer is computed here, with its heads."""
        def rows() -> list[list]:     # under the lock: the heads of the version serving now
            outs = _head_outputs(self.build.heads, [np.asarray(f, np.float32) for f in features])
            return [list(zip(o.feature, o.logits, o.selector.tolist())) for o in outs]
        self._append(rows, np.asarray(logits, np.float32), raw)

    def _append(self, rows: Callable[[], list[list]], logits: np.ndarray,
                raw: np.ndarray) -> None:
        """Appends requests (``rows()``: per exit, (feature, logits, selector) of each),
        their full logits and inputs; starts a retrain when one is due."""
        with self._lock:
            for record, exit_rows in zip(self._exits, rows()):
                record.extend(exit_rows)
            self._logits.extend(logits)
            self._raw.extend(raw[-RAW_INPUTS_KEPT:])
            self._since += len(logits)
            due = self._since >= self.config.retrain_every and not self._retraining
            if due:
                self._since = 0
                self._retraining = True
        if due:
            self._start_retrain()

    def _start_retrain(self) -> None:
        if not self.background:
            self.retrain_now()
            return
        self._worker = threading.Thread(target=self.retrain_now, name="layer-cache-retrain",
                                        daemon=True)
        self._worker.start()

    def wait(self, timeout_s: float = 600.0) -> None:
        if self._worker is not None:
            self._worker.join(timeout_s)

    # -- learning --------------------------------------------------------
    def _snapshot(self) -> tuple[list[ExitOutputs], np.ndarray, np.ndarray]:
        """Per exit, the serving version's outputs on every recorded request (with
        their compact features); the full model's probabilities; raw inputs."""
        with self._lock:
            serving = [ExitOutputs(np.stack([r[1] for r in d]), np.array([r[2] for r in d],
                                                                         np.float32),
                                   np.stack([r[0] for r in d])) for d in self._exits]
            logits = np.stack(self._logits)
            raw = np.stack(self._raw)
        # The teacher: the full model's probabilities (off the serving path).
        return serving, softmax(logits, axis=1).astype(np.float32), raw

    def retrain_now(self) -> RetrainReport:
        try:
            report = self._retrain()
        except Exception as e:  # noqa: BLE001 - a failed retrain must never stop serving
            report = RetrainReport(version=self.version + 1, samples=0, accepted=False,
                                   reason=f"retrain failed: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._retraining = False
        self.reports.append(report)
        self.log(f"layer cache v{report.version}: {report.outcome.replace('_', ' ')} "
                 f"({report.reason})")
        return report

    def _retrain(self) -> RetrainReport:
        cfg = self.config
        serving_outs, teacher, raw = self._snapshot()
        feats = [o.feature for o in serving_outs]
        n = len(teacher)
        version = self.version + 1
        ver, cal, train = slices(n, cfg, version)
        heads = [copy.deepcopy(h) for h in self.build.heads]
        dcfg = distill.DistillConfig(epochs=cfg.epochs, seed=cfg.seed + version)
        for i, head in enumerate(heads):
            distill.fit(head, feats[i][train], teacher[train], dcfg)
        outs_cal = _head_outputs(heads, [f[cal] for f in feats])
        st = self.entry["staged"]
        costs, own = staged_build.exit_costs([s["flops"] for s in st["stages"]],
                                             [e["flops"] for e in st["exits"]],
                                             st["head"]["flops"])
        thresholds = calibrate.calibrate(outs_cal, teacher[cal].argmax(1), cfg.target,
                                         costs=costs, exit_costs=own, z=cfg.confidence_z,
                                         per_exit=cfg.per_exit)
        if self.tamper is not None:
            self.tamper(heads)
        ref = teacher[ver].argmax(1)
        fidelity, hit_rate, saved = self._evaluate(
            _head_outputs(heads, [f[ver] for f in feats]), thresholds, ref)
        serving = self._evaluate(
            [ExitOutputs(o.logits[ver], o.selector[ver], o.feature[ver]) for o in serving_outs],
            [e["thresholds"] for e in self.entry["staged"]["exits"]], ref)
        report = RetrainReport(version=version, samples=n, accepted=False, reason="",
                               fidelity=fidelity, serving_fidelity=serving[0],
                               serving_hit_rate=serving[1], serving_flops_saved=serving[2],
                               hit_rate=hit_rate, flops_saved=saved, thresholds=thresholds)
        floor = min(cfg.fidelity_floor, serving[0])
        if fidelity < floor:
            report.reason = (f"fidelity {fidelity:.2%} on {len(ver)} held-out requests is below "
                             f"{floor:.2%}")
            return report
        if saved < serving[2] - cfg.savings_slack:
            report.reason = (f"saves {saved:.0%} of FLOPs on the held-out requests, the serving "
                             f"version {serving[2]:.0%}")
            return report
        if saved < serving[2] + cfg.min_gain and fidelity <= serving[0]:
            # Nothing to gain: devices would download a new version for nothing.
            report.outcome = "unchanged"
            report.reason = (f"no gain over the serving version (saves {saved:.0%} vs "
                             f"{serving[2]:.0%} of FLOPs, fidelity {fidelity:.2%}); not published")
            return report
        # Export and check the program the devices would run.
        candidate = staged_build.StagedBuild(self.build.task, self.build.labels,
                                             self.build.record, self.build.stages, heads,
                                             self.build.input_extra)
        entry, path = staged_build.export_program(candidate, self.directory, thresholds,
                                                  cfg.target, version)
        model = staged_build.load(entry, self.directory)
        problem = self._check_export(model, heads, raw)
        if problem:
            path.unlink(missing_ok=True)
            report.reason = problem
            return report
        self._swap(entry, model, candidate)
        report.accepted = True
        report.outcome = "published"
        report.reason = (f"fidelity {fidelity:.2%}, exits answer {report.hit_rate:.0%} of "
                         f"held-out requests, {saved:.0%} of FLOPs saved")
        return report

    def _evaluate(self, outs: list[ExitOutputs], thresholds, ref) -> tuple[float, float, float]:
        """(fidelity, exit rate, FLOPs saved) of exit outputs + thresholds on recorded
        requests, counting what the runtime would run: stages up to the answering
        exit and every exit that has a threshold for the gate on the way."""
        gate = self.config.verify_gate
        where, answer = calibrate.simulate(outs, ref, thresholds, gate)
        st = self.entry["staged"]
        total = st["total_flops"]
        stage_cum = np.cumsum([s["flops"] for s in st["stages"]])
        enabled = [t.get(gate) is not None for t in thresholds]
        exit_cum = np.cumsum([e["flops"] * on for e, on in zip(st["exits"], enabled)])
        cost = [stage_cum[e["after_stage"]] + exit_cum[i] for i, e in enumerate(st["exits"])]
        spent = np.array([cost[w] if w >= 0 else total + exit_cum[-1] for w in where])
        return (float((answer == ref).mean()), float((where >= 0).mean()),
                float(1.0 - spent.mean() / total))

    def _check_export(self, model: StagedModel, heads: list[ExitHead],
                      raw: np.ndarray) -> str:
        for x in raw[:8]:
            exits, logits = model.run_all(x)
            served = self.model.run_all(x)[1]
            if np.abs(logits - served).max() > self.config.export_tolerance:
                return "the exported program's final logits differ from the serving model's"
            for head, e in zip(heads, exits):
                with torch.no_grad():
                    want = head.from_feature(torch.from_numpy(np.asarray(e.feature)[None]))[0]
                if np.abs(want.numpy()[0] - e.logits).max() > self.config.export_tolerance:
                    return "the exported exit heads differ from the trained heads"
        return ""

    def _swap(self, entry: dict, model: StagedModel,
              candidate: staged_build.StagedBuild) -> None:
        old_file = self.entry["file"]
        manifest_version = manifest.update(self.directory, entry,
                                           signing_key=self.config.signing_key)
        with self._lock:
            self.entry, self.model, self.build = entry, model, candidate
            # Requests recorded so far are verified against the new version next time.
            feats = [np.stack([r[0] for r in d]) for d in self._exits]
            for outs, d in zip(_head_outputs(candidate.heads, feats), self._exits):
                d.clear()
                d.extend(zip(outs.feature, outs.logits, outs.selector.tolist()))
        if old_file != entry["file"]:
            (self.directory / old_file).unlink(missing_ok=True)
        if self.on_swap:
            self.on_swap(entry, manifest_version)

    def status(self) -> dict:
        return {"version": self.version, "recorded": len(self._logits),
                "retraining": self._retraining,
                "retrains": len(self.reports),
                "published": sum(r.outcome == "published" for r in self.reports),
                "rollbacks": sum(r.outcome == "rolled_back" for r in self.reports),
                "reports": [asdict(r) for r in self.reports[-10:]]}


def slices(n: int, config: OnlineConfig, version: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verify, calibrate, train) indices of ``n`` recorded requests for the
    retrain that would publish ``version``."""
    order = np.random.default_rng(config.seed + version).permutation(n)
    n_ver = max(1, int(n * config.verify_fraction))
    n_cal = max(1, int(n * config.calibrate_fraction))
    return order[:n_ver], order[n_ver:n_ver + n_cal], order[n_ver + n_cal:]


def _head_outputs(heads: list[ExitHead], feats: list[np.ndarray]) -> list[ExitOutputs]:
    outs = []
    with torch.no_grad():
        for head, f in zip(heads, feats):
            logits, selector = head.from_feature(torch.from_numpy(f))
            outs.append(ExitOutputs(logits.numpy(), selector.numpy()[:, 0], f))
    return outs


def learner_for(directory: Path, config: OnlineConfig = OnlineConfig(), cold: bool = False,
                **kwargs) -> OnlineLearner:
    """A learner for the staged program in ``directory``: the full model is
    rebuilt from ``full.pte`` (checked against it) to re-export new heads.
    ``cold`` first replaces the staged program with untrained heads and no
    thresholds (no exit answers until the first retrain)."""
    from knowcache.models.from_program import recover

    directory = Path(directory)
    current = manifest.load(directory)
    why = " (learning exits online needs a full model and a staged program)"
    full = current.require(manifest.Role.FULL, why)
    staged = current.require(manifest.Role.STAGED, why)
    shape = full["input"]["shape"]
    rng = np.random.default_rng(0)
    check = rng.uniform(-0.5, 0.5, (8, *shape[1:])).astype(np.float32)
    record = recover(current.file_of(full), current.task, current.labels, check)
    build = staged_build.prepare(record, shape, current.input_extra(), seed=config.seed)
    if cold:
        entry, _ = staged_build.export_program(build, directory, [], config.target,
                                               int(staged["version"]) + 1)
        manifest.update(directory, entry, signing_key=config.signing_key)
        if staged["file"] != entry["file"]:
            (directory / staged["file"]).unlink(missing_ok=True)
        staged = entry
    dims = [e["feature_dim"] for e in staged["staged"]["exits"]]
    if dims != [h.feature_dim for h in build.heads]:
        raise ValueError(f"{directory}: the staged program's exits ({dims}) do not match the "
                         "heads this knowcache builds; re-export it with `knowcache export --staged`")
    return OnlineLearner(directory, build, config, **kwargs)
