"""Layer caching: staged export, exit gates through the C++ Engine, the online
learner (shift, rollback), the activation cache's memory bound, the cloud's
--learn-exits, and `knowcache bench --layer-cache`.

Everything runs on the toy-scale vision build (the session fixture
``quick_vision_build``), whose full model is a real ResNet of the family."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from knowcache import _runtime
from knowcache.data.dataset import model_input
from knowcache.layer_cache import build as staged_build
from knowcache.layer_cache import calibrate
from knowcache.layer_cache.online import OnlineConfig, learner_for, slices
from knowcache.models import ModelRecord
from knowcache.runtime import Engine


def _copy_models(quick_vision_build, tmp_path: Path) -> Path:
    src = quick_vision_build[0]
    dst = tmp_path / "models" / "vision"
    shutil.copytree(src, dst)
    return dst


def _record(quick_vision_build) -> ModelRecord:
    return ModelRecord.load(quick_vision_build[0].parent.parent / "work" / "full.pt")


@pytest.fixture(scope="module")
def staged_models(quick_vision_build, tmp_path_factory):
    """The toy models plus a staged program with distilled, calibrated heads."""
    out = _copy_models(quick_vision_build, tmp_path_factory.mktemp("staged"))
    data = quick_vision_build[2]
    entry = staged_build.run(_record(quick_vision_build), data, out, input_shape=[1, 1, 28, 28],
                             input_extra={"image_size": [1, 28, 28]}, target=0.95,
                             train_samples=600, log=lambda _m: None)
    return out, entry, data


def _with_thresholds(models: Path, thresholds: dict, dst: Path) -> Path:
    """A copy of ``models`` whose staged exits all get ``thresholds``."""
    shutil.copytree(models, dst)
    doc = json.loads((dst / "manifest.json").read_text())
    for p in doc["partitions"]:
        if p["id"] == "staged":
            for e in p["staged"]["exits"]:
                e["thresholds"] = dict(thresholds)
    (dst / "manifest.json").write_text(json.dumps(doc))
    return dst


def _engine(models: Path, gate: str, **kw) -> Engine:
    return Engine.from_models_dir(models, staged=True, exit_gate=gate, **kw)


def test_recovering_the_record_from_its_program(quick_vision_build):
    from knowcache.models.from_program import recover
    models, _, data, _ = quick_vision_build
    record = _record(quick_vision_build)
    x = model_input("vision", data.test.x[:16])
    rebuilt = recover(models / "full.pte", "vision", list(data.labels), x)
    with torch.no_grad():
        want = record.build()(torch.from_numpy(x)).numpy()
        got = rebuilt.build()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_staged_program_equals_the_whole_model_when_no_exit_fires(staged_models, tmp_path):
    models, entry, data = staged_models
    quiet = _with_thresholds(models, {}, tmp_path / "quiet")
    engine = _engine(quiet, "confidence")
    full = _runtime.Partition.from_file(str(models / "full.pte"))
    staged = staged_build.load(entry, models)
    x = model_input("vision", data.test.x[:40])
    total = entry["staged"]["total_flops"]
    assert [m["method"] for m in entry["staged"]["stages"]] == [f"stage_{i}" for i in range(4)]
    for xi in x:
        want = full.run(xi[None])
        _, logits = staged.run_all(xi[None])
        np.testing.assert_allclose(logits, want, atol=1e-4)
        r = engine.infer(xi[None])
        assert r.exit_index == -1 and r.flops == total
        assert r.index == int(np.argmax(want))
    # Stage FLOPs add up to the unstaged program's own count.
    doc = json.loads((models / "manifest.json").read_text())
    full_flops = next(p["flops"] for p in doc["partitions"] if p["id"] == "full")
    assert total == full_flops


@pytest.mark.parametrize("gate", ["learned", "confidence", "entropy"])
def test_head_gates_hit_and_miss_as_their_threshold_says(staged_models, gate):
    models, entry, data = staged_models
    staged = staged_build.load(entry, models)
    exits, _ = staged.run_all(model_input("vision", data.test.x[:1]))
    out = exits[0]
    score, answer = calibrate.scores(gate, calibrate.ExitOutputs(
        out.logits[None], np.array([out.selector]), out.feature[None]), np.zeros(1, int), 8)
    threshold = calibrate.to_threshold(gate, float(score[0]))
    step = -1e-6 if gate == "entropy" else 1e-6     # toward stricter
    g = _runtime.ExitGate(gate)
    at = g.evaluate(0, out, threshold - step)        # just looser than this input's score
    assert at.hit and at.index == int(answer[0])
    assert not g.evaluate(0, out, threshold + 100 * step).hit


def test_exits_answer_through_the_engine_when_thresholds_allow(staged_models, tmp_path):
    models, entry, data = staged_models
    x = model_input("vision", data.test.x[:10])
    always = _with_thresholds(models, {"confidence": 0.0}, tmp_path / "always")
    never = _with_thresholds(models, {"confidence": 1.0}, tmp_path / "never")
    first = entry["staged"]["stages"][0]["flops"] + entry["staged"]["exits"][0]["flops"]
    for xi in x:
        r = _engine(always, "confidence").infer(xi[None])
        assert r.exit_index == 0 and r.flops == first
        assert _engine(never, "confidence").infer(xi[None]).exit_index == -1


def test_activation_cache_hits_a_repeated_input_with_the_whole_models_label(staged_models,
                                                                           tmp_path):
    models, _, data = staged_models
    near = _with_thresholds(models, {"activation": 0.001}, tmp_path / "near")
    engine = _engine(near, "activation")
    x = model_input("vision", data.test.x[:3])
    first = engine.infer(x[0][None])
    assert first.exit_index == -1                 # empty cache: the whole model ran
    again = engine.infer(x[0][None])
    assert again.exit_index == 0 and again.index == first.index
    stats = engine.layer_cache_stats()
    assert stats.activation.hits == 1 and stats.exit_hits[0] == 1


def test_activation_cache_stays_within_its_memory_bound(staged_models, tmp_path):
    models, entry, data = staged_models
    near = _with_thresholds(models, {"activation": 0.0}, tmp_path / "bound")
    dims = [e["feature_dim"] for e in entry["staged"]["exits"]]
    bound = 6 * _runtime.activation_entry_bytes(max(dims))
    engine = _engine(near, "activation", activation_entries=512, activation_bytes=bound)
    for xi in model_input("vision", data.test.x[:40]):
        engine.infer(xi[None])
        a = engine.layer_cache_stats().activation
        assert a.memory_bytes <= bound
    a = engine.layer_cache_stats().activation
    assert a.entries > 0 and a.evictions > 0 and a.inserts > a.entries


def test_bad_gate_names_and_bounds_are_rejected():
    with pytest.raises(_runtime.InvalidInputError, match="learned, confidence"):
        _runtime.ExitGate("oracle")
    with pytest.raises(_runtime.InvalidInputError, match="max_bytes"):
        Engine("vision", exit_gate="activation", activation_bytes=10)


def _stream(data, classes, n, seed):
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(np.isin(data.test.y, classes))
    return model_input("vision", data.test.x[rng.choice(idx, n)])


def _agreeing_hits(models: Path, x: np.ndarray, full) -> float:
    engine = _engine(models, "confidence")
    hits = 0
    for xi in x:
        r = engine.infer(xi[None])
        hits += r.exit_index >= 0 and r.index == int(np.argmax(full.run(xi[None])))
    return hits / len(x)


def test_online_learner_adapts_to_a_shifted_stream_and_rolls_back_a_bad_retrain(
        staged_models, tmp_path):
    models, _, data = staged_models
    work = tmp_path / "vision"
    shutil.copytree(models, work)
    # A toy full model (about 70% accurate) has weak exits: lower bars than the defaults.
    config = OnlineConfig(retrain_every=100, buffer=200, target=0.9, per_exit=0.9,
                          fidelity_floor=0.85)
    learner = learner_for(work, config, cold=True, background=False, log=lambda _m: None)
    assert learner.version == 2 and all(
        v is None for e in learner.entry["staged"]["exits"] for v in e["thresholds"].values())
    full = _runtime.Partition.from_file(str(work / "full.pte"))
    for xi in _stream(data, [0, 1, 2, 3, 4], 200, 0):
        learner.answer(xi[None])
    assert len(learner.reports) == 2
    shifted = _stream(data, [5, 6, 7, 8, 9], 200, 1)
    held_out = _stream(data, [5, 6, 7, 8, 9], 60, 2)
    before = _agreeing_hits(work, held_out, full)
    for xi in shifted:
        learner.answer(xi[None])
    assert len(learner.reports) == 4
    after = _agreeing_hits(work, held_out, full)
    assert any(r.accepted for r in learner.reports), [r.reason for r in learner.reports]
    assert after > before, (before, after, [r.reason for r in learner.reports])
    # New versions are verified against what the serving program's exits answer.
    serving, _, raw = learner._snapshot()
    for j in range(1, 5):
        exits, _ = learner.model.run_all(raw[-j])
        for e, o in zip(exits, serving):
            np.testing.assert_allclose(o.logits[-j], e.logits, atol=1e-3)

    # A corrupted retrain is verified, rejected and never published.
    version = learner.version
    manifest = (work / "manifest.json").read_text()
    files = sorted(p.name for p in work.glob("staged*.pte"))

    def scramble(heads):
        with torch.no_grad():
            for h in heads:
                h.out.weight.normal_(0, 5.0)
                h.out.bias.zero_()
    learner.tamper = scramble
    report = learner.retrain_now()
    assert not report.accepted and "fidelity" in report.reason
    assert learner.version == version
    assert (work / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in work.glob("staged*.pte")) == files
    assert learner.status()["rollbacks"] >= 1


def test_warm_learner_verifies_against_the_shipped_heads(staged_models, tmp_path):
    """Started on a trained staged program, the learner's baseline is that
    program's exits (not the fresh heads it trains from)."""
    models, _, data = staged_models
    work = tmp_path / "vision"
    shutil.copytree(models, work)
    x = _stream(data, list(range(10)), 200, 3)
    engine = _engine(work, "confidence")      # the shipped program, before any swap
    shipped_exits = np.array([engine.infer(xi[None]).exit_index >= 0 for xi in x])
    config = OnlineConfig(retrain_every=200, buffer=200, target=0.9, per_exit=0.9,
                          fidelity_floor=0.85)
    learner = learner_for(work, config, background=False, log=lambda _m: None)
    assert learner.version == 1
    for xi in x:
        learner.answer(xi[None])
    report = learner.reports[-1]
    # The shipped program's exit rate on the requests the retrain verified on.
    verify = slices(len(x), config, report.version)[0]
    shipped_rate = shipped_exits[verify].mean()
    assert shipped_rate > 0
    assert report.serving_hit_rate == pytest.approx(shipped_rate, abs=1.5 / len(verify))
    assert report.serving_flops_saved > 0


def test_server_learns_exits_and_publishes_new_versions(staged_models, tmp_path):
    from fastapi.testclient import TestClient

    from knowcache.server import ServeConfig, create_app
    models, _, data = staged_models
    root = tmp_path / "models"
    shutil.copytree(models, root / "vision")
    app = create_app(ServeConfig(models=root, learn_exits=True, retrain_every=40,
                                 batching=False), load_in_background=False)
    x = model_input("vision", data.test.x[:80])
    with TestClient(app) as client:
        version0 = client.get("/v1/vision/manifest").json()["version"]
        full = _runtime.Partition.from_file(str(root / "vision" / "full.pte"))
        for xi in x:
            r = client.post("/v1/vision/infer", content=xi.tobytes(), headers={
                "X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,1,28,28"})
            assert r.status_code == 200
            assert r.json()["index"] == int(np.argmax(full.run(xi[None])))
        start = time.time()
        while time.time() - start < 120:      # the retrain runs in the background
            status = client.get("/v1/vision/layer-cache").json()
            if status["retrains"] >= 1 and not status["retraining"]:
                break
            time.sleep(0.5)
        assert status["retrains"] >= 1, status
        accepted = sum(r["accepted"] for r in status["reports"])
        doc = client.get("/v1/vision/manifest").json()
        assert doc["version"] == version0 + accepted
        staged = next(p for p in doc["partitions"] if p["id"] == "staged")
        blob = client.get("/v1/vision/partitions/staged").content
        assert _runtime.sha256_hex(blob) == staged["sha256"]
        assert client.get("/v1/kws/layer-cache").status_code == 404


def test_bench_layer_cache_reports_every_gate_and_the_online_learner(staged_models, tmp_path):
    from knowcache.commands.bench import run_one
    models, _, _ = staged_models
    root = tmp_path / "models"
    shutil.copytree(models, root / "vision")
    out = tmp_path / "report.json"
    report = run_one("vision", models=root, profile="wifi", quick=True, queries=30,
                     systems=("device_only",), layer_cache=True, online_requests=60,
                     retrain_every=20, json_path=out, plots=tmp_path / "plots")
    assert json.loads(out.read_text())["task"] == "vision"
    systems = report["systems"]
    assert {"device_only", "device_full", "layer_cache", "layer_cache_learned",
            "layer_cache_entropy", "layer_cache_activation"} <= set(systems)
    for name, s in systems.items():
        assert s["flops_per_query"] > 0, name
    whole = systems["device_full"]["flops_per_query"]
    assert systems["device_only"]["flops_per_query"] < whole / 4   # the width-1/3 student
    for name in ("layer_cache", "layer_cache_learned", "layer_cache_entropy",
                 "layer_cache_activation"):
        s = systems[name]
        for key in ("flops_saved", "latency_saved", "fidelity", "accuracy", "exit_histogram"):
            assert s[key] is not None, (name, key)
        assert sum(s["exit_histogram"].values()) == 30
        assert s["flops_saved"] == pytest.approx(1 - s["flops_per_query"] / whole)
    assert systems["layer_cache_activation"]["activation_cache"]["memory_bytes"] <= (
        systems["layer_cache_activation"]["activation_cache"]["bound_bytes"])
    online = report["online"]
    assert online["requests"] == 60 and len(online["retrains"]) == 3
    assert [w["requests"] for w in online["windows"]] == [60]
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {
        "vision-wifi-layer-cache-exits.png", "vision-wifi-layer-cache-online.png"}
