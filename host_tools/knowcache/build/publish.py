"""Export stage: trained records -> int8 ExecuTorch programs, calibrated gate
thresholds, ``manifest.json``, ``metrics.json`` and the model card.

Every figure here is measured on the exported programs themselves, run by the
C++ runtime (``knowcache.runtime.Partition``), so the card describes what a
device will run, quantization included.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

from knowcache import manifest, tta
from knowcache.build import flops, lower, model_card, specialize, training
from knowcache.build.calibration import (MIN_ANSWERS, Calibration, at_threshold,
                                         calibrate_shared, calibrate_threshold,
                                         candidate_answers, gate_entropies)
from knowcache.build.pipeline import PLAN, BuildConfig, config_dict, inputs, load_data
from knowcache.build.quantize import quantize_int8
from knowcache.data import Dataset, image_tasks, store
from knowcache.data.input_contract import PIXEL_RANGE
from knowcache.models import ModelRecord
from knowcache.runtime import Partition

CALIBRATION_SAMPLES = 256     # int8 activation ranges: training inputs run through observers
QUICK_CALIBRATION_SAMPLES = 32   # --quick builds (tests, demos): a quarter of the export time
SIZE_TARGET = 20.0          # cached model at least 20x smaller than the full model
ACCURACY_SLACK = 0.01       # cached accuracy >= full accuracy - 1 point on cached classes


def load_records(work: Path) -> tuple[dict, dict[str, ModelRecord]]:
    plan_path = work / PLAN
    if not plan_path.is_file():
        raise FileNotFoundError(f"{work} holds no trained models ({PLAN} missing); run "
                                "`knowcache build-models` or the train/specialize/partition steps")
    plan = json.loads(plan_path.read_text())
    names = [plan.get("full"), plan.get("cached"), plan.get("generic"), *plan.get("partitions", [])]
    missing = [n for n in names if not n or not (work / n).is_file()]
    if missing or "partitions" not in plan or "cached" not in plan:
        raise FileNotFoundError(f"{work} is incomplete (missing {missing or 'steps'}); run "
                                "`knowcache specialize` and `knowcache partition` first")
    records = {}
    for n in names:
        rec = ModelRecord.load(work / n)
        records[rec.name] = rec
    return plan, records


def _program(rec: ModelRecord, calib: torch.Tensor, example: tuple, other_bias: float) -> bytes:
    model = rec.build()
    if other_bias:
        with torch.no_grad():
            model.backbone.fc.bias[rec.labels.index(rec.other_label)] -= other_bias
    if rec.role != "full":
        model = quantize_int8(model, calib)
    return lower.lower_to_pte(model, example)


def export_workers() -> int:
    """Processes that lower programs side by side, this one included:
    ``KNOWCACHE_EXPORT_WORKERS``, else 2 (1 on a one-core machine). Lowering is
    single-threaded Python (torch.export and ExecuTorch's passes), about 30 s a kws
    program on a 2-core CPU, so a second process runs beside it; it holds its own
    torch (about 1 GB), so a machine short of memory sets 1."""
    raw = os.environ.get("KNOWCACHE_EXPORT_WORKERS")
    if raw is None:
        return max(1, min(2, os.cpu_count() or 1))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"KNOWCACHE_EXPORT_WORKERS={raw!r}: set a whole number of processes "
                         ">= 1 (1 lowers the programs one by one in this process)")
    return n


def _export_worker(threads: int) -> None:
    """A lowering process takes its share of the torch threads."""
    torch.set_num_threads(threads)


def _programs(records: dict[str, ModelRecord], calib: torch.Tensor, example: tuple,
              biases: dict[str, float], stage: Path, log: training.Log,
              workers: int) -> dict[str, bytes]:
    """Every record quantized (all but the full model) and lowered, saved to ``stage``
    as it is done, in the records' order. With ``workers`` > 1, spawned processes
    lower from the front of the list while this one lowers from the back (a job not
    started yet is taken back), so a process that is slow to start (it imports
    torch and ExecuTorch) never makes the export slower than lowering alone. The
    threads are shared among them; the bytes do not depend on ``workers``."""
    programs: dict[str, bytes] = {}

    def done(name: str, pte: bytes) -> None:
        programs[name] = pte
        lower.save_program(stage, name, pte)
        log(f"exported {name} ({'float32' if records[name].role == 'full' else 'int8'}, "
            f"{len(pte) / 1024:.0f} KiB)")

    def lower_here(name: str) -> None:
        done(name, _program(records[name], calib, example, biases.get(name, 0.0)))

    names = list(records)
    helpers = min(workers, len(names)) - 1
    if helpers < 1:
        for name in names:
            lower_here(name)
        return programs
    log(f"exporting {len(names)} programs in {helpers + 1} processes...")
    threads = torch.get_num_threads()
    share = max(1, threads // (helpers + 1))
    try:
        with ProcessPoolExecutor(helpers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_export_worker, initargs=(share,)) as pool:
            jobs = {n: pool.submit(_program, records[n], calib, example, biases.get(n, 0.0))
                    for n in names}
            torch.set_num_threads(share)
            try:
                for name in reversed(names):
                    if jobs[name].cancel():
                        lower_here(name)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)   # fail now, not after them
                raise
            finally:
                torch.set_num_threads(threads)
            for name in names:
                if not jobs[name].cancelled():
                    done(name, jobs[name].result())
    except BrokenProcessPool as e:
        raise RuntimeError(f"an export process died ({e}); if the machine ran out of memory, "
                           "set KNOWCACHE_EXPORT_WORKERS=1 to lower one program at a time") from e
    return {name: programs[name] for name in names}


def cloud_tta(spec) -> str:
    """The test-time views the cloud averages for a task's full model (an image
    task file's network.cloud_tta; none for the built-in tasks): knowcache/tta.py."""
    return spec.network.cloud_tta if spec.network is not None else "none"


def run_programs(paths: dict[str, Path], x: np.ndarray, workers: int = 2,
                 views: dict[str, str] | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Logits of each program on every row of x, through the C++ runtime; a program
    named in ``views`` averaged over those test-time views (knowcache/tta.py).
    Also returns each program's logits on the plain rows (one view), from the same runs."""
    def one(item):
        pid, path = item
        part = Partition.from_file(str(path))
        return pid, tta.run_rows(part.run, x, (views or {}).get(pid, "none"))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = dict(pool.map(one, paths.items()))
    return ({pid: averaged for pid, (averaged, _) in done.items()},
            {pid: plain for pid, (_, plain) in done.items()})


def publish(cfg: BuildConfig, out: Path, log: training.Log = print,
            data: Dataset | None = None, signing_key: Path | None = None,
            workers: int | None = None) -> dict:
    """Exports everything in cfg.work to ``out`` (replaced as a whole); returns the metrics.
    With ``signing_key`` the manifest is signed (``manifest.sig``) before the swap.
    ``workers``: processes lowering programs side by side (default ``export_workers()``)."""
    started = time.time()
    workers = export_workers() if workers is None else workers
    plan, records = load_records(cfg.work)
    data = data or load_data(cfg, log)
    labels = list(data.labels)
    spec = cfg.spec()
    rng = np.random.default_rng(cfg.seed)
    samples = QUICK_CALIBRATION_SAMPLES if cfg.quick else CALIBRATION_SAMPLES
    calib = training.as_float(cfg.task, data.train.x[rng.permutation(len(data.train))[:samples]])
    example = (calib[:1],)
    stage = out.with_name(out.name + ".staging")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    biases = _other_biases(cfg, records, data, labels)
    views = cloud_tta(spec)
    programs = _programs(records, calib, example, biases, stage, log, workers)

    log("running the exported programs on validation and test data...")
    paths = {n: stage / f"{n}.pte" for n in programs}
    xv = training.as_float(cfg.task, data.val.x).numpy()
    xt = training.as_float(cfg.task, data.test.x).numpy()
    # The full model's figures, and the agreement the gates are calibrated for, are
    # those of the cloud's answers: over its test-time views, when it has any.
    val, _ = run_programs(paths, xv, views={"full": views})
    test, test_plain = run_programs(paths, xt, views={"full": views})
    one_view = test_plain["full"].argmax(1)
    yv, yt = data.val.y.astype(np.int64), data.test.y.astype(np.int64)
    full_v, full_t = val["full"].argmax(1), test["full"].argmax(1)

    cached_names = plan["cached_classes"]
    real_v, real_t = store.is_real(data.val), store.is_real(data.test)
    metrics: dict = {
        "task": cfg.task, "source": data.source, "quick": cfg.quick,
        "test_samples": int((~real_t).sum()), "val_samples": int(len(yv)),
        "cached_classes": cached_names, "private": plan.get("private", []),
        "groups": plan["groups"], "confusion_inside": plan.get("confusion_inside"),
        "models": {},
    }
    full_bytes = len(programs["full"])
    def cost(rec: ModelRecord) -> int:
        return flops.program_flops(cfg.task, rec.config, len(rec.labels), spec.input_shape)

    entries = [manifest.partition_entry(
        "full", programs["full"], role="full", labels=labels, file="full.pte",
        input_shape=spec.input_shape, threshold=1.0, flops=cost(records["full"]),
        **_input_extra(spec))]
    # With real recordings, gates are calibrated on them alone: the device serves real
    # voices, and a student's (weaker) agreement on synthesized ones would set it.
    rows = real_v if real_v.any() else np.ones(len(yv), bool)
    shared = _shared_partition_threshold(records, labels, val, full_v, rows, log)
    thresholds: dict[str, Calibration] = {}
    for name, rec in records.items():
        if rec.role == "full":
            continue
        _, other, table = _label_space(rec, labels)
        if rec.role == "partition" and shared is not None:
            cal = at_threshold(val[name], table[full_v], shared, other_index=other, shared=True)
        else:
            cal = calibrate_threshold(val[name], table[full_v], other_index=other,
                                      groups=[rows] if real_v.any() else None)
        thresholds[name] = cal
        entries.append(manifest.partition_entry(
            name, programs[name], role=rec.role, labels=rec.labels, file=f"{name}.pte",
            input_shape=spec.input_shape, threshold=cal.threshold,
            other_label=rec.other_label, flops=cost(rec), **_input_extra(spec)))
        log(f"{name}: {len(programs[name]) / 1024:.1f} KiB, threshold {cal.threshold:.3f}, "
            f"accepts {cal.accept_rate:.1%} of validation inputs at {cal.agreement:.1%} agreement")

    def evaluate(mask: np.ndarray) -> dict:
        """Every model's figures on the test samples in ``mask``."""
        out = {"full": {
            "role": "full", "bytes": full_bytes, "dtype": "float32",
            "cloud_tta": views, "test_time_views": tta.VIEWS[views],
            "accuracy_one_view": float((one_view[mask] == yt[mask]).mean()) if mask.any() else None,
            "parameters": sum(v.numel() for v in records["full"].build().parameters()),
            **_full_figures(full_t[mask], yt[mask], labels, cached_names)}}
        for name, rec in records.items():
            if rec.role != "full":
                out[name] = _student_figures(rec, test[name][mask], full_t[mask], yt[mask], labels,
                                             cached_names, thresholds[name])
                out[name].update({"bytes": len(programs[name]), "dtype": "int8",
                                  "parameters": sum(v.numel() for v in rec.build().parameters()),
                                  "size_ratio": full_bytes / len(programs[name]),
                                  "other_bias": biases.get(name, 0.0),
                                  "other_floor": cfg.other_floor})
        return out

    metrics["models"] = evaluate(~real_t)
    if real_t.any():
        metrics["real"] = {"source": data.meta.get("real", {}), "test_samples": int(real_t.sum()),
                           "test_speakers": len(set(data.test.group[real_t].tolist())),
                           "models": evaluate(real_t)}
    cached = metrics["models"]["cached"]
    full = metrics["models"]["full"]
    metrics["targets"] = {
        "size_ratio": cached["size_ratio"], "size_target": SIZE_TARGET,
        "size_met": cached["size_ratio"] >= SIZE_TARGET,
        "accuracy_gap": cached["accuracy_own_classes"] - full["accuracy_cached_classes"],
        "accuracy_met": cached["accuracy_own_classes"]
        >= full["accuracy_cached_classes"] - ACCURACY_SLACK,
    }
    defined = image_tasks.task_file(cfg.task)
    metrics["build"] = {"config": _plan_config(cfg), "trained_on": plan.get("trained_on"),
                        "export_seconds": round(time.time() - started, 1),
                        "task": json.loads(defined.read_text()) if defined else None}
    manifest.write(stage, cfg.task, labels, entries, signing_key=signing_key,
                   version=_next_version(out, log),
                   private_labels=plan.get("private", []),
                   selector={"kind": "partition_mass",
                             "partitions": [f"p{i}" for i in range(len(plan["groups"]))]},
                   **({"cloud_tta": views} if views != "none" else {}))
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if defined is not None:           # an image task: its definition travels with its models
        shutil.copyfile(defined, stage / image_tasks.TASK_FILE)
    (stage / "README.md").write_text(model_card.render(metrics))
    _replace_dir(stage, out)
    log(f"wrote {out}/manifest.json, {len(programs)} programs, metrics.json and README.md")
    return metrics


def _next_version(out: Path, log: training.Log) -> int:
    """One above the version of the manifest ``out`` holds (1 for a new folder): a
    rebuilt folder must never read as older than the one devices have installed,
    which refuse a signed manifest whose version went down."""
    path = manifest.path_of(out)
    if not path.is_file():
        return 1
    try:
        return int(json.loads(path.read_text())["version"]) + 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        log(f"{path}: no readable version ({e}); the new manifest starts at version 1")
        return 1


def _full_figures(pred: np.ndarray, y: np.ndarray, labels: list[str], cached: list[str]) -> dict:
    on_cached = np.isin(y, [labels.index(c) for c in cached])
    return {"samples": int(len(y)), "accuracy": _mean(pred == y),
            "accuracy_cached_classes": _mean(pred[on_cached] == y[on_cached])}


def _label_space(rec: ModelRecord, labels: list[str]) -> tuple[list[int], int, np.ndarray]:
    """A student's owned task indices, its "other" index (-1: none) and the
    task-to-student label table (the identity for the generic model)."""
    owned = specialize.owned_indices(labels, rec.metrics["owned"])
    return owned, len(owned) if rec.other_label else -1, specialize.label_table(owned, len(labels))


def _student_figures(rec: ModelRecord, logits: np.ndarray, full_pred: np.ndarray, y: np.ndarray,
                     labels: list[str], cached: list[str], cal: Calibration) -> dict:
    """A student's figures on test samples (its gate at the calibrated threshold)."""
    owned, other, table = _label_space(rec, labels)
    pred = logits.argmax(1)
    own = np.isin(y, owned)
    y_space, full_space = table[y], table[full_pred]
    ent, _, is_other = gate_entropies(logits, other)
    accepted = (~is_other) & (ent <= cal.threshold)
    m = {
        "role": rec.role, "classes": rec.metrics["owned"], "threshold": cal.threshold,
        "val_accept_rate": cal.accept_rate, "val_agreement": cal.agreement,
        "threshold_shared": cal.shared,
        "accuracy_own_classes": _mean(pred[own] == y_space[own]),
        "test_accept_rate": _mean(accepted),
        "test_accept_rate_own_classes": _mean(accepted[own]) if own.any() else 0.0,
        "test_agreement_accepted": _mean(pred[accepted] == full_space[accepted]),
        "test_accuracy_accepted": _mean(pred[accepted] == y_space[accepted]),
    }
    if rec.other_label:
        m["other_recall"] = _mean(pred[~own] == other)
        # Two-stage answer: local when accepted, else the full model's.
        two = np.where(accepted, np.array(owned + [-1])[pred], full_pred)
        m["two_stage_accuracy"] = _mean(two == y)
    else:
        on_cached = np.isin(y, [labels.index(c) for c in cached])
        m["accuracy"] = _mean(pred == y)
        m["accuracy_cached_classes"] = _mean(pred[on_cached] == y[on_cached])
    return m


def _mean(hits: np.ndarray) -> float | None:
    """Share of True in ``hits``; None for no samples (JSON null, not NaN)."""
    return float(np.mean(hits)) if len(hits) else None


def _shared_partition_threshold(records: dict[str, ModelRecord], labels: list[str],
                                val: dict[str, np.ndarray], full_v: np.ndarray,
                                rows: np.ndarray, log: training.Log) -> float | None:
    """CacheNet's partitions share one threshold, fitted on their calibration rows
    pooled, when any of them has fewer than ``MIN_ANSWERS`` answers there to be
    calibrated on alone (a few real validation speakers); None otherwise."""
    parts, counts = [], {}
    for name, rec in records.items():
        if rec.role != "partition":
            continue
        _, other, table = _label_space(rec, labels)
        parts.append((val[name][rows], table[full_v][rows], other))
        counts[name] = candidate_answers(val[name][rows], other)
    if not parts or min(counts.values()) >= MIN_ANSWERS:
        return None
    t = calibrate_shared(parts)
    log(f"partitions share one gate threshold ({t:.3f}): calibration answers "
        f"{', '.join(f'{n} {c}' for n, c in counts.items())}, fewer than {MIN_ANSWERS} "
        "for some to be calibrated alone")
    return t


def _other_biases(cfg: BuildConfig, records: dict[str, ModelRecord], data: Dataset,
                  labels: list[str]) -> dict[str, float]:
    """Per student with "other": the logit shift fitted on validation data (float
    model). With real recordings, the floor holds on the real speakers and on the
    synthesized ones alike (a few real validation speakers are too few to fit on alone)."""
    device = torch.device("cpu")
    xv = inputs(cfg, data, "val")
    yv = data.val.y.astype(np.int64)
    groups = store.is_real(data.val).astype(int)
    out = {}
    for name, rec in records.items():
        if not rec.other_label:
            continue
        _, other, table = _label_space(rec, labels)
        logits = training.predict(training.trainable(cfg.task, rec.build()), xv, device)
        out[name] = specialize.fit_other_bias(logits, table[yv], other,
                                              min_recall=cfg.other_floor, groups=groups)
    return out


def _input_extra(spec) -> dict:
    if spec.name == "kws":
        return {"sample_rate": spec.sample_rate}
    # Programs take pixels scaled to [0, 1] and normalize inside (models/nets.py).
    return {"image_size": list(spec.image_size), "value_range": list(PIXEL_RANGE)}


def _plan_config(cfg: BuildConfig) -> dict:
    d = config_dict(cfg)
    d.pop("work", None)
    d.pop("extra", None)
    return d


def _replace_dir(stage: Path, out: Path) -> None:
    """Swaps ``stage`` in for ``out`` so a reader never sees a half-written model set."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)
