"""Manifests: written and read by knowcache.manifest, validated by the C++ parser."""

import json

import pytest

from knowcache import manifest, runtime
from knowcache.manifest import Role


def test_round_trip(tiny_models):
    m = runtime.Manifest.load(str(tiny_models / "manifest.json"))
    assert m.task == "kws"
    assert m.schema_version == manifest.SCHEMA_VERSION
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
    with pytest.raises(runtime.NotFoundError, match="no such file: .*manifest.json"):
        runtime.Manifest.load(str(tmp_path / "manifest.json"))
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(runtime.InvalidInputError, match="not valid JSON"):
        runtime.Manifest.load(str(tmp_path / "manifest.json"))


def test_write_manifest_refuses_invalid_entries(tmp_path):
    entry = manifest.partition_entry("a", b"abc", role=Role.CACHED, labels=["x", "x"],
                                     file="a.pte", input_shape=(1, 4))
    with pytest.raises(runtime.InvalidInputError, match="repeats 'x'"):
        manifest.write(tmp_path, "kws", ["x"], [entry])
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ValueError, match="role"):
        manifest.partition_entry("a", b"abc", role="boss", labels=["x", "y"], file="a.pte",
                                 input_shape=(1, 4))
    with pytest.raises(runtime.InvalidInputError, match="labels needs at least 2"):
        manifest.info_of(dict(entry, labels=["x"]))


def test_manifest_file_reads_entries_by_role(tiny_models):
    m = manifest.load(tiny_models)
    assert m.task == "kws" and m.labels == ["yes", "no", "up", "down", "left", "right"]
    assert m.parsed.labels == m.labels
    assert [p["id"] for p in m.entries(Role.PARTITION)] == ["p0", "p1"]
    assert m.parsed.ids_with_role(Role.PARTITION) == ["p0", "p1"]
    assert m.first(Role.CACHED)["id"] == "cached" and m.first(Role.STAGED) is None
    assert m.file_of(m.entry("p1")) == tiny_models / "p1.pte"
    assert m.parsed.find("cached").role == Role.CACHED == "cached"
    with pytest.raises(FileNotFoundError, match="export --staged"):
        m.require(Role.STAGED)
    assert m.selector is None and m.flops() == {}
    with pytest.raises(runtime.InvalidInputError, match="boss"):
        m.parsed.ids_with_role("boss")


def test_update_replaces_one_entry_and_keeps_the_rest(tiny_models, tmp_path):
    import shutil

    copy = tmp_path / "kws"
    shutil.copytree(tiny_models, copy)
    before = manifest.load(copy)
    manifest.write(copy, before.task, before.labels, before.entries(), version=before.version,
                   selector={"kind": "partition_mass", "partitions": ["p0", "p1"]})
    p1 = dict(before.entry("p1"), threshold=0.7, version=2)
    assert manifest.update(copy, p1) == before.version + 1
    after = manifest.load(copy)
    assert [p["id"] for p in after.entries()] == [p["id"] for p in before.entries()]
    assert after.parsed.find("p1").threshold == pytest.approx(0.7)
    assert after.selector == {"kind": "partition_mass", "partitions": ["p0", "p1"]}
    assert manifest.update(copy, p1, bump=False) == before.version + 1
    extra = dict(before.entry("p1"), id="p9", file="p9.pte")   # a new id: added last
    manifest.update(copy, extra)
    assert [p["id"] for p in manifest.load(copy).entries()][-1] == "p9"


def test_private_labels_are_written_checked_and_kept_by_updates(tiny_models, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_models, tmp_path / "kws")
    before = manifest.load(copy)
    assert before.private_labels == [] and before.parsed.private_labels == []
    manifest.write(copy, before.task, before.labels, before.entries(), private_labels=["no"])
    written = manifest.load(copy)
    assert written.private_labels == ["no"] and written.parsed.private_labels == ["no"]
    manifest.update(copy, dict(written.entry("p1"), threshold=0.7))
    assert manifest.load(copy).private_labels == ["no"]
    with pytest.raises(runtime.InvalidInputError,
                       match="manifest.private_labels names 'maybe', which is not in manifest.labels"):
        manifest.write(copy, before.task, before.labels, before.entries(),
                       private_labels=["maybe"])
    device_only_yes = [e for e in before.entries() if e["id"] in ("cached", "full")]
    with pytest.raises(ValueError, match="private_labels: 'up' is held by no device program"):
        manifest.write(copy, before.task, before.labels, device_only_yes, private_labels=["up"])
    assert manifest.load(copy).private_labels == ["no"]  # nothing written by a refusal


def test_the_server_selector_comes_from_the_manifest(tiny_models, tmp_path):
    import shutil

    from knowcache.server import selector

    assert selector.from_manifest(manifest.load(tiny_models)) == ([], None)
    copy = tmp_path / "kws"
    shutil.copytree(tiny_models, copy)
    m = manifest.load(copy)
    manifest.write(copy, m.task, m.labels, m.entries(),
                   selector={"kind": "partition_mass", "partitions": ["p1", "p0"]})
    ids, sel = selector.from_manifest(manifest.load(copy))
    assert ids == ["p1", "p0"]   # the selector's order, not the manifest's
    # p1 holds down, left, right (task indices 3, 4, 5)
    assert sel.select([0.0, 0.0, 0.1, 0.5, 0.2, 0.2]).tolist() == [0]
    manifest.write(copy, m.task, m.labels, m.entries(), selector={"kind": "nearest"})
    with pytest.raises(ValueError, match="nearest"):
        selector.from_manifest(manifest.load(copy))


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
