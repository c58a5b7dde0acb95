"""The model build end to end at toy scale: full model, knowledge-caching
student, generic student, CacheNet partitions, int8 export, calibration,
manifest and model card; then the runtime loads and runs the result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knowcache.build import pipeline, publish
from knowcache.data import images, store
from knowcache.runtime import Engine, Manifest, Partition, sha256_hex

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(quick_vision_build):
    return quick_vision_build


def test_manifest_lists_every_role_with_verified_files(built):
    models, _, _, _ = built
    manifest = Manifest.load(str(models / "manifest.json"))
    roles = sorted(p.role for p in manifest.partitions)
    assert roles == ["cached", "full", "generic", "partition", "partition"]
    for info in manifest.partitions:
        data = (models / info.file).read_bytes()
        assert info.bytes == len(data) and info.sha256 == sha256_hex(data)
        assert 0.0 <= info.threshold <= 1.0
        assert info.input.shape == [1, 1, 28, 28]
    cached = manifest.find("cached")
    assert cached.labels[-1] == "other" and cached.other_index == len(cached.labels) - 1
    covered = sorted(c for p in manifest.partitions if p.role == "partition"
                     for c in p.labels if c != "other")
    assert covered == sorted(manifest.labels)
    doc = json.loads((models / "manifest.json").read_text())
    assert doc["selector"]["partitions"] == ["p0", "p1"]


def test_metrics_and_model_card(built):
    models, metrics, _, _ = built
    assert (models / "metrics.json").is_file()
    card = (models / "README.md").read_text()
    assert "Quick build" in card and "| cached |" in card and "smaller than the full model" in card
    m = metrics["models"]
    assert m["cached"]["dtype"] == "int8" and m["full"]["dtype"] == "float32"
    assert m["cached"]["bytes"] < m["full"]["bytes"]
    assert set(metrics["targets"]) >= {"size_ratio", "size_met", "accuracy_gap", "accuracy_met"}
    for name in ("cached", "generic", "p0", "p1"):
        assert 0.0 <= m[name]["test_accept_rate"] <= 1.0


def test_exported_full_model_agrees_with_reported_accuracy(built):
    models, metrics, data, _ = built
    full = Partition.from_file(str(models / "full.pte"))
    x = data.test.x.astype(np.float32) / 255.0
    pred = np.array([np.argmax(full.run(row[None])) for row in x])
    assert float((pred == data.test.y).mean()) == pytest.approx(
        metrics["models"]["full"]["accuracy"])


def test_engine_runs_the_exported_set(built):
    models, _, data, _ = built
    engine = Engine.from_models_dir(models, slots=2)
    assert engine.cached_ids() == ["cached"]
    r = engine.infer(data.test.x[:1].astype(np.float32) / 255.0)
    assert r.partition_id == "cached" and r.label


def test_export_without_training_says_what_to_run(tmp_path):
    cfg = pipeline.BuildConfig(task="vision", work=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="build-models"):
        publish.publish(cfg, tmp_path / "out")


def test_specialize_without_full_model_says_what_to_run(tmp_path):
    cfg = pipeline.BuildConfig(task="vision", work=tmp_path / "empty")
    data = store.shrink(images.fashion_mnist(), (10, 10, 10), 0)
    with pytest.raises(FileNotFoundError, match="knowcache train"):
        pipeline.run_specialize(cfg, data, print)


def test_damaged_model_folder_is_reported(built, tmp_path):
    import shutil

    from knowcache.runtime import CorruptPartitionError, NotFoundError
    models, _, _, _ = built
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    (copy / "cached.pte").unlink()
    with pytest.raises(NotFoundError, match="cached.pte"):
        Engine.from_models_dir(copy)
    data = bytearray((models / "cached.pte").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "cached.pte").write_bytes(bytes(data))
    with pytest.raises(CorruptPartitionError, match="sha256"):
        Engine.from_models_dir(copy)
