"""Manifests: written by knowcache.export, read by the C++ parser."""

import json

import pytest

from knowcache import export, runtime


def test_round_trip(tiny_models):
    m = runtime.Manifest.load(str(tiny_models / "manifest.json"))
    assert m.task == "kws"
    assert m.schema_version == export.MANIFEST_SCHEMA_VERSION
    assert [p.id for p in m.partitions] == ["cached", "p0", "p1", "full"]
    cached = m.find("cached")
    assert cached.other_index == 2
    assert cached.input.shape == [1, 16]
    assert cached.sha256 == runtime.sha256_hex((tiny_models / "cached.pte").read_bytes())
    assert m.find("absent") is None


def _doc(tiny_models):
    return json.loads((tiny_models / "manifest.json").read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
    (lambda d: d["partitions"][0].pop("sha256"), "sha256 is missing"),
    (lambda d: d["partitions"][0].update(threshold=-0.1), "threshold"),
    (lambda d: d["partitions"][1].update(id="cached"), "repeats partition id"),
    (lambda d: d.pop("partitions"), "partitions must be a list"),
])
def test_invalid_manifests_name_the_problem(tiny_models, mutate, message):
    doc = _doc(tiny_models)
    mutate(doc)
    with pytest.raises(runtime.InvalidInputError, match=message):
        runtime.Manifest.parse(json.dumps(doc))


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(runtime.NotFoundError):
        runtime.Manifest.load(str(tmp_path / "manifest.json"))
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(runtime.InvalidInputError, match="not valid JSON"):
        runtime.Manifest.load(str(tmp_path / "manifest.json"))


def test_write_manifest_refuses_invalid_entries(tmp_path):
    entry = export.partition_entry("a", b"abc", role="cached", labels=["x", "x"], file="a.pte",
                                   input_shape=(1, 4))
    with pytest.raises(runtime.InvalidInputError, match="repeats 'x'"):
        export.write_manifest(tmp_path, "kws", ["x"], [entry])
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ValueError, match="role"):
        export.partition_entry("a", b"abc", role="boss", labels=["x", "y"], file="a.pte",
                               input_shape=(1, 4))


def test_file_changed_after_manifest_is_detected(tiny_models, tmp_path):
    import shutil

    copy = tmp_path / "kws"
    shutil.copytree(tiny_models, copy)
    data = bytearray((copy / "p1.pte").read_bytes())
    data[-10] ^= 0x55
    (copy / "p1.pte").write_bytes(bytes(data))
    engine = runtime.Engine("kws", manifest=runtime.Manifest.load(str(copy / "manifest.json")))
    with pytest.raises(runtime.CorruptPartitionError, match="sha256"):
        engine.install_from_manifest("p1")
    engine.install_from_manifest("p0")  # the intact one still loads
    assert engine.cached_ids() == ["p0"]
