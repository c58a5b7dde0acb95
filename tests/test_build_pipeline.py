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
from test_gate_calibration import numpy_gate

pytestmark = pytest.mark.slow
STUDENTS = ("cached", "generic", "p0", "p1")


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
    assert [m[n]["threshold"] for n in STUDENTS] == pytest.approx(
        [Manifest.load(str(models / "manifest.json")).find(n).threshold for n in STUDENTS],
        rel=1e-6)


def _gate_by_hand(models, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, answer label) per row of ``x`` for partition ``name``: its program's
    logits through NumPy's entropy gate at the manifest's threshold ("other" is never
    accepted); the runtime computes in float32, so 1e-6 of slack at the threshold."""
    manifest = Manifest.load(str(models / "manifest.json"))
    info = manifest.find(name)
    program = Partition.from_file(str(models / info.file))
    logits = np.stack([program.run(row[None]).reshape(-1) for row in x]).astype(np.float64)
    entropy = np.array([numpy_gate(row)[1] for row in logits])
    answer = np.array(info.labels)[logits.argmax(1)]
    other = info.labels[info.other_index] if info.other_index >= 0 else None
    return (answer != other) & (entropy <= info.threshold + 1e-6), answer


def test_thresholds_and_accept_rates_hold_when_recomputed_by_hand(built):
    """Each student's threshold, applied by hand to its exported program on the
    validation split, accepts what metrics.json says and keeps the calibration
    target (99% agreement with the full program); on the test split it accepts
    test_accept_rate of the inputs."""
    models, metrics, data, _ = built
    full = Partition.from_file(str(models / "full.pte"))
    labels = np.array(Manifest.load(str(models / "manifest.json")).labels)
    xv = data.val.x.astype(np.float32) / 255.0
    xt = data.test.x.astype(np.float32) / 255.0
    full_val = labels[[int(np.argmax(full.run(row[None]))) for row in xv]]
    pooled = []     # partitions sharing one threshold keep the target together
    for name in STUDENTS:
        m = metrics["models"][name]
        accepted, answer = _gate_by_hand(models, name, xv)
        assert accepted.mean() == pytest.approx(m["val_accept_rate"], abs=1.01 / len(xv)), name
        agree = answer[accepted] == full_val[accepted]
        if m["threshold_shared"]:
            pooled.append(agree)
        elif accepted.any():
            assert agree.mean() >= 0.99, name
        accepted, _ = _gate_by_hand(models, name, xt)
        assert accepted.mean() == pytest.approx(m["test_accept_rate"], abs=1.01 / len(xt)), name
    if pooled:
        agree = np.concatenate(pooled)
        assert not agree.size or agree.mean() >= 0.99     # a tiny build may accept nothing
        assert len({metrics["models"][n]["threshold"] for n in ("p0", "p1")}) == 1


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


def test_republishing_a_models_folder_raises_its_manifest_version(built, tmp_path):
    """Devices refuse a signed manifest whose version went down, so a rebuilt
    folder continues the numbering of the one it replaces."""
    import shutil
    models, _, data, _ = built
    copy = tmp_path / "vision"
    shutil.copytree(models, copy)
    before = json.loads((copy / "manifest.json").read_text())["version"]
    cfg = pipeline.BuildConfig(task="vision", work=models.parent.parent / "work", quick=True,
                               device="cpu", k=2)
    # The fixture lowered its programs one by one; this export lowers them in two
    # processes (publish.export_workers): the programs are the same bytes.
    logs: list[str] = []
    publish.publish(cfg, copy, logs.append, data=data, workers=2)
    assert any("in 2 processes" in line for line in logs), logs
    assert json.loads((copy / "manifest.json").read_text())["version"] == before + 1
    programs = sorted(copy.glob("*.pte"))
    assert len(programs) >= 5
    for pte in programs:
        assert pte.read_bytes() == (models / pte.name).read_bytes(), pte.name
    # (the fixture's own publish went to a new folder; publishing again there costs minutes)
    assert publish._next_version(tmp_path / "fresh", lambda _: None) == 1
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{not json")
    assert publish._next_version(tmp_path / "junk", lambda _: None) == 1


def test_export_workers_come_from_the_environment_and_a_bad_value_says_what_to_set(
        monkeypatch):
    monkeypatch.delenv("KNOWCACHE_EXPORT_WORKERS", raising=False)
    assert 1 <= publish.export_workers() <= 2
    monkeypatch.setenv("KNOWCACHE_EXPORT_WORKERS", "1")
    assert publish.export_workers() == 1
    for bad in ("0", "two"):
        monkeypatch.setenv("KNOWCACHE_EXPORT_WORKERS", bad)
        with pytest.raises(ValueError, match="KNOWCACHE_EXPORT_WORKERS.*whole number"):
            publish.export_workers()
