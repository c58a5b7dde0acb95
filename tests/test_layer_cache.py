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


def test_every_exit_runs_inside_one_xnnpack_call(staged_models):
    """A cache head is paid by every query that reaches it: no portable kernel
    (ExecuTorch's adaptive pooling was one) may split it out of XNNPACK."""
    from conftest import exits_outside_xnnpack
    models, entry, _ = staged_models
    assert exits_outside_xnnpack((models / entry["file"]).read_bytes(), entry) == {}


@pytest.mark.parametrize("shape,grid", [((2, 48, 14, 14), (4, 4)), ((2, 96, 7, 7), (2, 2)),
                                        ((2, 64, 16, 16), (4, 4)), ((1, 3, 9, 10), (4, 3)),
                                        ((1, 5, 13, 1), (5, 1))])
def test_grid_pooling_equals_adaptive_pooling(shape, grid):
    from knowcache.build.lower import lower_to_pte
    from knowcache.layer_cache.heads import HeadConfig, make
    from knowcache.models.xnn_ops import GridMean
    from conftest import program_calls
    x = torch.randn(shape)
    want = torch.nn.functional.adaptive_avg_pool2d(x, grid)
    # for the map it was made for, and for any other (adaptive pooling itself)
    torch.testing.assert_close(GridMean(grid, shape[2:])(x), want)
    torch.testing.assert_close(GridMean(grid, (shape[2] + 1, shape[3]))(x), want)
    if shape[3] > 1:
        head = make((1, *shape[1:]), 10, HeadConfig(grid=grid)).eval()
        torch.testing.assert_close(head.feature(x), want.flatten(1))
        assert "pool.weights" not in head.state_dict()
        assert program_calls(lower_to_pte(head, (x[:1],))) == (1, [])


def test_model_head_exit_is_the_keyword_heads_without_the_branch_in_one_xnnpack_call():
    """kws's last exit answers as the full model's keyword head ensemble would with
    the spectrogram branch dropped (its features zero), as one XNNPACK call."""
    from knowcache.build.lower import lower_to_pte
    from knowcache.layer_cache.heads import HeadConfig, make
    from knowcache.models.nets import EmbeddingHeadConfig, HeadEnsemble
    from conftest import program_calls
    torch.manual_seed(0)
    config = EmbeddingHeadConfig(hidden=16, members=3, side_hidden=8,
                                 spectrogram={"resnet": {"widths": [4, 12]}, "classes": 5})
    ensemble = HeadEnsemble(config, 5).eval()
    e = torch.randn(2, 17, 96)
    with torch.no_grad():
        want = torch.stack([m.fc(torch.cat([torch.relu(m.conv2(torch.relu(
            m.conv1(e.transpose(1, 2))))).amax(2), torch.zeros(2, 8)], 1))
            for m in ensemble.members]).mean(0)
        head = make((1, 96, 17, 1), 5, HeadConfig(kind="model_head"), ensemble).eval()
        activation = e.transpose(1, 2).reshape(2, 96, 17, 1)
        logits, _, feature = head(activation)
    torch.testing.assert_close(logits, want)
    torch.testing.assert_close(feature, activation.flatten(1))
    assert program_calls(lower_to_pte(head, (torch.randn(1, 96, 17, 1),))) == (1, [])


def test_a_staged_export_after_a_plain_one_keeps_versions_rising(staged_models, tmp_path,
                                                                  quick_vision_build):
    """A plain `knowcache export` drops the staged entry and bumps the manifest; the
    next `export --staged` must not restart at version 1 (a device that installed
    staged.vN would see the version go down, under a file name it has seen)."""
    from knowcache import manifest
    models, entry, data = staged_models
    out = tmp_path / "models"
    shutil.copytree(models, out)
    current = manifest.load(out)
    plain = [p for p in current.entries() if p["role"] != "staged"]
    manifest.write(out, current.task, current.labels, plain, version=current.version + 1,
                   **current.extra)
    (out / entry["file"]).unlink()
    again = staged_build.run(_record(quick_vision_build), data, out, input_shape=[1, 1, 28, 28],
                             input_extra={"image_size": [1, 28, 28]}, cold=True,
                             log=lambda _m: None)
    assert again["version"] > entry["version"]
    assert again["version"] == manifest.load(out).version == current.version + 2
    assert again["file"] == f"staged.v{again['version']}.pte" and (out / again["file"]).is_file()


def _gate_score_by_hand(gate: str, out) -> float:
    """What the runtime gate compares with its threshold, from the exit's outputs
    in NumPy (float64): sigmoid(selector), max softmax, normalized entropy."""
    if gate == "learned":
        return 1.0 / (1.0 + np.exp(-float(out.selector)))
    p = np.exp(out.logits.astype(np.float64) - out.logits.max())
    p /= p.sum()
    if gate == "confidence":
        return float(p.max())
    return float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(len(p)))


@pytest.mark.parametrize("gate", ["learned", "confidence", "entropy"])
def test_head_gates_hit_and_miss_as_their_threshold_says(staged_models, gate):
    models, entry, data = staged_models
    staged = staged_build.load(entry, models)
    # The first test input whose score is not at an end of [0, 1] (thresholds stay inside).
    for x in model_input("vision", data.test.x[:50]):
        out = staged.run_all(x[None])[0][0]
        score = _gate_score_by_hand(gate, out)
        if 1e-3 < score < 1 - 1e-3:
            break
    assert 1e-3 < score < 1 - 1e-3
    step = -1e-4 if gate == "entropy" else 1e-4     # toward stricter
    g = _runtime.ExitGate(gate)
    at = g.evaluate(0, out, score - step)            # just looser than this input's score
    assert at.hit and at.index == int(np.argmax(out.logits))
    assert not g.evaluate(0, out, score + step).hit  # just stricter


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
    models, entry, data = staged_models
    work = tmp_path / "vision"
    shutil.copytree(models, work)
    # A toy full model (about 70% accurate) has weak exits: lower bars than the defaults.
    config = OnlineConfig(retrain_every=100, buffer=200, target=0.9, per_exit=0.9,
                          fidelity_floor=0.85)
    learner = learner_for(work, config, cold=True, background=False, log=lambda _m: None)
    assert learner.version == entry["version"] + 1 and all(
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
    models, entry, data = staged_models
    work = tmp_path / "vision"
    shutil.copytree(models, work)
    x = _stream(data, list(range(10)), 200, 3)
    engine = _engine(work, "confidence")      # the shipped program, before any swap
    shipped_exits = np.array([engine.infer(xi[None]).exit_index >= 0 for xi in x])
    config = OnlineConfig(retrain_every=200, buffer=200, target=0.9, per_exit=0.9,
                          fidelity_floor=0.85)
    learner = learner_for(work, config, background=False, log=lambda _m: None)
    assert learner.version == entry["version"]
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
    """With bars a verified retrain always clears (any fidelity above 5%, any
    savings, no gain needed), every retrain is published: the manifest and the
    staged partition each gain one version per retrain, the old program file is
    deleted, and the server serves the new version's manifest, bytes and
    model_version."""
    from fastapi.testclient import TestClient

    from knowcache.server import ServeConfig, create_app
    models, _, data = staged_models
    root = tmp_path / "models"
    task = root / "vision"
    shutil.copytree(models, task)
    # Few epochs: any verified retrain clears these bars (the suite's time budget).
    online = OnlineConfig(retrain_every=40, buffer=200, fidelity_floor=0.05, savings_slack=1.0,
                          min_gain=-1.0, epochs=5)
    app = create_app(ServeConfig(models=root, learn_exits=True, online=online, batching=False),
                     load_in_background=False)
    x = model_input("vision", data.test.x[:81])
    full = _runtime.Partition.from_file(str(task / "full.pte"))
    headers = {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,1,28,28"}

    def staged_entry(doc):
        return next(p for p in doc["partitions"] if p["id"] == "staged")

    with TestClient(app) as client:
        assert app.state.knowcache.tasks["vision"].learner.config is online
        doc0 = client.get("/v1/vision/manifest").json()
        staged0 = staged_entry(doc0)
        etag0 = client.get("/v1/vision/partitions/staged").headers["etag"]
        assert (task / staged0["file"]).is_file()
        for window in (x[:40], x[40:80]):     # one retrain after each window, in the background
            for xi in window:
                r = client.post("/v1/vision/infer", content=xi.tobytes(), headers=headers)
                assert r.status_code == 200
                assert r.json()["index"] == int(np.argmax(full.run(xi[None])))
            start = time.time()
            while time.time() - start < 300:
                status = client.get("/v1/vision/layer-cache").json()
                if not status["retraining"]:
                    break
                time.sleep(0.2)
        assert [(r["version"], r["outcome"]) for r in status["reports"]] == [
            (staged0["version"] + 1, "published"), (staged0["version"] + 2, "published")], [
            r["reason"] for r in status["reports"]]
        assert status["published"] == 2 and status["version"] == staged0["version"] + 2

        doc = client.get("/v1/vision/manifest").json()
        assert doc["version"] == doc0["version"] + 2
        staged = staged_entry(doc)
        assert staged["version"] == staged0["version"] + 2
        assert staged["file"] == f"staged.v{staged0['version'] + 2}.pte"
        # The manifest on disk is the one served; only the serving program is left.
        assert json.loads((task / "manifest.json").read_text()) == doc
        assert sorted(p.name for p in task.glob("staged*.pte")) == [staged["file"]]
        assert not (task / staged0["file"]).exists()
        # The new program's bytes are served under the new ETag.
        blob = client.get("/v1/vision/partitions/staged", headers={"If-None-Match": etag0})
        assert blob.status_code == 200
        assert blob.content == (task / staged["file"]).read_bytes()
        assert _runtime.sha256_hex(blob.content) == staged["sha256"] != staged0["sha256"]
        assert blob.headers["etag"] == f'"{staged["sha256"]}"'
        # Answers carry the new manifest version, and are still the full model's.
        r = client.post("/v1/vision/infer", content=x[80].tobytes(), headers=headers).json()
        assert r["model_version"] == doc0["version"] + 2
        assert r["index"] == int(np.argmax(full.run(x[80][None])))
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
    staged = next(p for p in json.loads((root / "vision" / "manifest.json").read_text())[
        "partitions"] if p["id"] == "staged")["staged"]
    total = staged["total_flops"]
    assert whole == total
    assert systems["device_only"]["flops_per_query"] < whole / 4   # the width-1/3 student
    for name, gate in (("layer_cache", "confidence"), ("layer_cache_learned", "learned"),
                       ("layer_cache_entropy", "entropy"), ("layer_cache_activation",
                                                           "activation")):
        s = systems[name]
        for key in ("flops_saved", "latency_saved", "fidelity", "accuracy", "exit_histogram"):
            assert s[key] is not None, (name, key)
        hist = s["exit_histogram"]
        assert sum(hist.values()) == 30
        # By hand from the manifest: a query answered at exit i ran the stages up to it
        # and every exit on the way that has a threshold for this gate; one that no
        # exit took ran every stage, those exits and the head.
        on = [e["thresholds"].get(gate) is not None for e in staged["exits"]]
        exits_run = np.cumsum([e["flops"] * o for e, o in zip(staged["exits"], on)])
        stages_run = np.cumsum([st["flops"] for st in staged["stages"]])
        spent = sum(n * (stages_run[staged["exits"][int(k[5:])]["after_stage"]]
                         + exits_run[int(k[5:])])
                    for k, n in hist.items() if k.startswith("exit_"))
        spent += hist["whole_model"] * (total + exits_run[-1])
        assert s["flops_per_query"] == pytest.approx(spent / 30), name
        assert s["flops_saved"] == pytest.approx(1 - spent / 30 / total), name
    assert systems["layer_cache_activation"]["activation_cache"]["memory_bytes"] <= (
        systems["layer_cache_activation"]["activation_cache"]["bound_bytes"])
    online = report["online"]
    assert online["requests"] == 60 and len(online["retrains"]) == 3
    assert [w["requests"] for w in online["windows"]] == [60]
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {
        "vision-wifi-layer-cache-exits.png", "vision-wifi-layer-cache-online.png"}


def test_augmented_exit_samples_carry_the_full_models_answers_on_them(quick_vision_build):
    """Image heads also learn on augmented copies of the training inputs: the
    teacher's probabilities must be the full model's on exactly those copies."""
    from knowcache.build import training
    record, data = _record(quick_vision_build), quick_vision_build[2]
    build = staged_build.prepare(record, [1, 1, 28, 28], {})
    assert build.stages.exit_training.augmented_copies == 1
    x = data.train.x[:40]
    plain = staged_build.features_and_teacher(build, x, batch=16)
    feats, teacher = staged_build.features_and_teacher(build, x, batch=16,
                                                       augment=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    net = record.build().eval()
    with torch.no_grad():
        want = torch.cat([torch.softmax(net(training.augment(
            "vision", torch.from_numpy(model_input("vision", x[i:i + 16])), gen)), 1)
            for i in range(0, 40, 16)]).numpy()
    np.testing.assert_allclose(teacher, want, atol=1e-5)
    assert not np.allclose(feats[0], plain[0][0])


def test_distillation_schedule_is_checked():
    from knowcache.layer_cache.distill import DistillConfig
    with pytest.raises(ValueError, match="one_cycle"):
        DistillConfig(schedule="cosine")
