"""The artifacts shipped in models/: manifests match their files, every program
loads in the runtime and answers inputs of its declared shape, and the model
cards state the targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from knowcache._runtime import StagedModel
from knowcache.runtime import Engine, Manifest, Partition, sha256_hex

MODELS = Path(__file__).resolve().parent.parent / "models"
TASKS = ("kws", "vision", "cifar10")


@pytest.mark.parametrize("task", TASKS)
def test_manifest_matches_files(task):
    manifest = Manifest.load(str(MODELS / task / "manifest.json"))
    assert manifest.task == task
    for info in manifest.partitions:
        data = (MODELS / task / info.file).read_bytes()
        assert len(data) == info.bytes, info.id
        assert sha256_hex(data) == info.sha256, info.id
    roles = {p.role for p in manifest.partitions}
    assert roles == {"full", "cached", "generic", "partition", "staged"}


@pytest.mark.parametrize("task", TASKS)
def test_every_program_loads_and_answers(task):
    manifest = Manifest.load(str(MODELS / task / "manifest.json"))
    rng = np.random.default_rng(0)
    full = Partition.from_file(manifest.path_of(manifest.find("full")), manifest.find("full"))
    for info in manifest.partitions:
        x = rng.uniform(0, 1, info.input.shape).astype(np.float32)
        if task == "kws":
            x = (x - 0.5) * 0.1
        if info.role == "staged":     # the full model, cut into stages with exit heads
            staged = StagedModel.from_file(manifest.path_of(info), info)
            exits, logits = staged.run_all(x)
            assert len(exits) == staged.num_exits == {"kws": 4, "vision": 3, "cifar10": 3}[task]
            np.testing.assert_allclose(logits, full.run(x), atol=1e-4)
            continue
        logits = Partition.from_file(manifest.path_of(info), info).run(x)
        assert logits.size == len(info.labels) and np.isfinite(logits).all(), info.id


# kws ships staged.v17, exported before heads pooled inside XNNPACK: its
# re-export (v18: the same heads, exits of one call each, 22% less time in
# them) is calibrated under the current rule and changed 0.8 point of answers
# on the real-voice bench stream against v17's 0.4, so v17 stays until a
# rebuild keeps real voices within 0.5 point (docs/layer-caching.md).
@pytest.mark.parametrize("task", ("vision", "cifar10"))
def test_every_shipped_exit_runs_inside_one_xnnpack_call(task):
    """Each exit head of a shipped staged program is one XNNPACK call with no
    portable kernel beside it (every query reaching the exit pays for it)."""
    from conftest import exits_outside_xnnpack
    doc = json.loads((MODELS / task / "manifest.json").read_text())
    staged = next(p for p in doc["partitions"] if p["role"] == "staged")
    assert exits_outside_xnnpack((MODELS / task / staged["file"]).read_bytes(), staged) == {}


@pytest.mark.parametrize("task", TASKS)
def test_partitions_cover_every_class_once(task):
    manifest = Manifest.load(str(MODELS / task / "manifest.json"))
    owned = [c for p in manifest.partitions if p.role == "partition" for c in p.labels
             if c != "other"]
    assert sorted(owned) == sorted(manifest.labels)


@pytest.mark.parametrize("task", TASKS)
def test_model_card_states_measured_targets(task):
    card = (MODELS / task / "README.md").read_text()
    metrics = json.loads((MODELS / task / "metrics.json").read_text())
    assert "## Targets" in card and "Quick build" not in card
    assert f"{metrics['targets']['size_ratio']:.1f}x" in card
    assert metrics["models"]["full"]["bytes"] == Manifest.load(
        str(MODELS / task / "manifest.json")).find("full").bytes


def test_the_cifar10_models_carry_their_task_file():
    """So a clone without the data set can bench and evaluate them (`make demo`)."""
    task = json.loads((MODELS / "cifar10" / "task.json").read_text())
    manifest = Manifest.load(str(MODELS / "cifar10" / "manifest.json"))
    assert task["labels"] == list(manifest.labels)
    cached = manifest.find("cached")
    assert sorted(task["cached"]) == sorted(c for c in cached.labels if c != "other")
    shipped = json.loads((MODELS.parent / "tasks" / "cifar10.json").read_text())
    assert task["network"] | shipped["network"] == task["network"]     # built from it
    assert task["training"] == shipped["training"]


def test_the_cifar10_cloud_answers_over_test_time_views(tmp_path):
    """The shipped CIFAR-10 manifest asks the cloud for airbench's 6 views: `knowcache
    eval` reports the cloud's (averaged) answers as the full model's, the one-view
    program's accuracy beside them, and holds layer caching against the one view."""
    import shutil
    from knowcache import evaluate, manifest, tta
    from knowcache.data import folders
    from knowcache.data.dataset import model_input
    assert manifest.load(MODELS / "cifar10").cloud_tta == "mirror_translate"
    data = tmp_path / "images"
    for label in sorted(p.name for p in (MODELS.parent / "samples" / "cifar10").iterdir()):
        (data / label).mkdir(parents=True)
        for f in sorted((MODELS.parent / "samples" / "cifar10" / label).glob("*.jpg"))[:4]:
            shutil.copy(f, data / label / f.name)
    ev = evaluate.run(MODELS / "cifar10", data)
    full = Partition.from_file(str(MODELS / "cifar10" / "full.pte"))
    found = folders.load_task_folder(data, tuple(ev.labels), (3, 32, 32))
    x = model_input("cifar10", found.x)
    averaged = np.stack([tta.run(full.run, r[None], "mirror_translate").reshape(-1) for r in x])
    logits = np.stack([full.run(r[None]).reshape(-1) for r in x])
    assert not np.allclose(averaged, logits, atol=1e-3)
    averaged, one = averaged.argmax(1), logits.argmax(1)
    assert np.array_equal(ev.full_pred, averaged)
    f = ev.programs["full"]
    assert f["cloud_tta"] == "mirror_translate"
    assert f["accuracy"] == pytest.approx(np.mean(averaged == ev.y))
    assert f["accuracy_one_view"] == pytest.approx(np.mean(one == ev.y))
    for gate in ev.layer_cache.values():
        assert gate["full_accuracy"] == pytest.approx(np.mean(one == ev.y))


def test_engine_loads_the_shipped_kws_cache():
    engine = Engine.from_models_dir(MODELS / "kws")
    r = engine.infer(np.zeros((1, 16000), np.float32))
    assert r.partition_id == "cached"


@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_staged_program_can_learn_its_exits_online(task, tmp_path):
    """`knowcache serve --learn-exits` on the shipped models: the full model is
    rebuilt from its program (a clone has no full.pt: the kws network with its
    spectrogram branch, airbench's for cifar10) and cut into the stages of the
    shipped staged program, whose exits the learner's heads must fit."""
    import shutil

    from knowcache.layer_cache.online import learner_for
    shutil.copytree(MODELS / task, tmp_path / task)
    learner = learner_for(tmp_path / task, log=lambda m: None)
    assert learner.build.record.metrics["max_abs_error"] < 1e-3
    doc = json.loads((MODELS / task / "manifest.json").read_text())
    stages = next(p for p in doc["partitions"] if p["role"] == "staged")["staged"]
    assert list(learner.build.stages.stage_flops) == [s["flops"] for s in stages["stages"]]
