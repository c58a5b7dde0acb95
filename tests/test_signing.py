"""Signed manifests (docs/security.md): `knowcache keys`, `export --sign`, the
server sending the signature with the manifest, the online learner signing the
versions it publishes, and the runtimes (Python binding, a fetch from a real
`knowcache serve`, knowcache-device) refusing what a trusted key did not sign.
Every key is generated at test time."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import confident, write_tiny_models
from knowcache import manifest, runtime, signing
from knowcache.cli import main

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "build/host/runtime_cpp/knowcache-device"


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: "trusted" and "other"."""
    return {name: signing.generate(tmp_path / "keys", name) for name in ("trusted", "other")}


def public(key: signing.KeyFiles) -> str:
    return key.public.read_text().strip()


def signed_copy(src: Path, dst: Path, key: signing.KeyFiles | None) -> Path:
    shutil.copytree(src, dst)
    signing.remove_signature(dst)
    if key is not None:
        signing.sign_manifest(dst, key.private)
    return dst


def test_keys_generate_writes_a_private_key_only_its_owner_reads_and_names_the_key(tmp_path):
    res = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    private, pub = tmp_path / "k/signing.key", tmp_path / "k/signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    raw = base64.b64decode(pub.read_text().strip(), validate=True)
    assert len(raw) == 32
    kid = hashlib.sha256(raw).hexdigest()[:16]
    assert f"key id {kid}" in res.output
    assert signing.public_of(private) == pub.read_text().strip()
    # A key is never overwritten.
    before = private.read_bytes()
    again = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "k")])
    assert again.exit_code == 1 and "exists" in again.output
    assert private.read_bytes() == before


def test_keys_sign_and_verify_the_shipped_vision_manifest(tmp_path, keys):
    models = tmp_path / "vision"
    models.mkdir()
    shutil.copy(REPO / "models/vision/manifest.json", models)
    runner = CliRunner()
    res = runner.invoke(main, ["keys", "sign", str(models), "--key", str(keys["trusted"].private)])
    assert res.exit_code == 0, res.output
    line = (models / "manifest.sig").read_text().strip()
    doc = json.loads(line)
    assert doc["alg"] == "ed25519" and doc["key_id"] == keys["trusted"].key_id
    ok = runner.invoke(main, ["keys", "verify", str(models), "--trusted",
                              str(keys["other"].public), "--trusted", str(keys["trusted"].public)])
    assert ok.exit_code == 0 and keys["trusted"].key_id in ok.output, ok.output
    wrong = runner.invoke(main, ["keys", "verify", str(models), "--trusted",
                                 str(keys["other"].public)])
    assert wrong.exit_code == 1 and "not trusted" in wrong.output
    path = models / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"version": 1', b'"version": 9', 1))
    tampered = runner.invoke(main, ["keys", "verify", str(models), "--trusted",
                                    str(keys["trusted"].public)])
    assert tampered.exit_code == 1 and "does not verify" in tampered.output


def test_export_sign_signs_the_manifest_publish_writes(tmp_path, keys, monkeypatch):
    """The CLI wiring of `export --sign`: publish (here a stand-in writing the tiny
    models' manifest, as publish writes its manifest) gets the key and the manifest
    it writes verifies; training and data are not what this tests."""
    from knowcache.build import publish as publish_mod
    from knowcache.commands import build
    tiny = write_tiny_models(tmp_path / "tiny")
    current = manifest.load(tiny)

    def fake_publish(cfg, out, log, data=None, signing_key=None):
        shutil.copytree(tiny, out)
        manifest.write(out, current.task, current.labels, current.entries(),
                       signing_key=signing_key)
        return {}
    monkeypatch.setattr(publish_mod, "load_records", lambda work: ({}, {}))
    monkeypatch.setattr(publish_mod, "publish", fake_publish)
    monkeypatch.setattr(build, "_data", lambda cfg: None)
    monkeypatch.setattr(build, "_summary", lambda metrics, out: None)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["export", "--task", "kws", "--work", str(tmp_path / "w"),
                                    "--out", str(out), "--sign", str(keys["trusted"].private)])
    assert res.exit_code == 0, res.output
    kid = signing.verify(manifest.path_of(out).read_bytes(), signing.read_signature(out),
                         [signing.load_public(keys["trusted"].public)])
    assert kid == keys["trusted"].key_id


def test_export_with_a_key_that_is_not_a_private_key_fails_before_any_work(tmp_path, keys):
    res = CliRunner().invoke(main, ["export", "--task", "kws", "--work", str(tmp_path / "w"),
                                    "--out", str(tmp_path / "m"),
                                    "--sign", str(keys["trusted"].public)])
    assert res.exit_code == 1 and "not an unencrypted PEM private key" in res.output
    assert not (tmp_path / "m").exists()


def test_rewriting_a_manifest_re_signs_it_or_drops_the_stale_signature(tmp_path, keys):
    models = write_tiny_models(tmp_path / "kws")
    trusted = [signing.load_public(keys["trusted"].public)]
    entry = manifest.load(models).entry("p0")
    version = manifest.update(models, entry, signing_key=keys["trusted"].private)
    data = manifest.path_of(models).read_bytes()
    assert signing.verify(data, signing.read_signature(models), trusted) == keys["trusted"].key_id
    assert manifest.load(models).version == version
    manifest.update(models, entry)       # no key: the old signature would not match
    assert signing.read_signature(models) is None
    with pytest.raises(signing.SignatureError, match="not signed"):
        signing.verify(manifest.path_of(models).read_bytes(), None, trusted)


def test_server_sends_the_signature_with_the_manifest(tmp_path, keys):
    from fastapi.testclient import TestClient

    from knowcache.server import ServeConfig, create_app
    root = tmp_path / "models"
    signed_copy(write_tiny_models(tmp_path / "tiny" / "kws"), root / "kws", keys["trusted"])
    line = signing.read_signature(root / "kws")
    with TestClient(create_app(ServeConfig(models=root, batching=False),
                               load_in_background=False)) as client:
        res = client.get("/v1/kws/manifest")
        assert res.status_code == 200
        assert res.content == manifest.path_of(root / "kws").read_bytes()   # byte for byte
        assert res.headers[signing.HEADER] == line
        sig = client.get("/v1/kws/manifest.sig")
        assert sig.status_code == 200 and sig.text.strip() == line
    signing.remove_signature(root / "kws")
    with TestClient(create_app(ServeConfig(models=root, batching=False),
                               load_in_background=False)) as client:
        assert signing.HEADER not in client.get("/v1/kws/manifest").headers
        missing = client.get("/v1/kws/manifest.sig")
        assert missing.status_code == 404 and "unsigned" in missing.json()["detail"]


def test_python_engine_loads_a_signed_folder_and_refuses_a_tampered_or_unsigned_one(
        tmp_path, keys, tiny_models):
    trusted = [public(keys["trusted"])]
    good = signed_copy(tiny_models, tmp_path / "good", keys["trusted"])
    engine = runtime.Engine.from_models_dir(good, trusted_keys=trusted)
    assert engine.infer(confident(1)).label == "no"
    assert engine.manifest.signed_by == keys["trusted"].key_id
    # Rotation: either key of the two.
    other = signed_copy(tiny_models, tmp_path / "other", keys["other"])
    both = trusted + [public(keys["other"])]
    assert runtime.Engine.from_models_dir(other, trusted_keys=both).cached_ids() == ["cached"]

    tampered = signed_copy(tiny_models, tmp_path / "tampered", keys["trusted"])
    path = manifest.path_of(tampered)
    path.write_bytes(path.read_bytes().replace(b'"threshold": 0.3', b'"threshold": 1.0', 1))
    with pytest.raises(runtime.CorruptPartitionError, match="does not verify"):
        runtime.Engine.from_models_dir(tampered, trusted_keys=trusted)
    with pytest.raises(runtime.FailedPreconditionError, match="not signed"):
        runtime.Engine.from_models_dir(tiny_models, trusted_keys=trusted)
    with pytest.raises(runtime.FailedPreconditionError, match="which is not trusted"):
        runtime.Engine.from_models_dir(other, trusted_keys=trusted)
    # An unverified manifest object cannot be slipped in either.
    with pytest.raises(runtime.FailedPreconditionError, match="not verified by a trusted key"):
        runtime.Engine.from_manifest(manifest.load(good).parsed, trusted_keys=trusted)
    with pytest.raises(runtime.InvalidInputError, match="no trusted key"):
        runtime.Engine.from_models_dir(good, require_signature=True)


@pytest.mark.slow
def test_engine_installs_a_hinted_partition_only_from_a_manifest_a_trusted_key_signed(
        tmp_path, keys):
    """A real `knowcache serve`: a cold engine that trusts one key fetches the
    manifest (with its signature header) for the partition the cloud hints at."""
    from knowcache.bench.cloud_process import cloud
    tiny = write_tiny_models(tmp_path / "tiny" / "kws",
                             selector={"kind": "partition_mass", "partitions": ["p0", "p1"]})
    x = np.zeros((1, 16), np.float32)
    x[0, 4] = 0.3         # the full model says "left", held by p1
    for signer, fetched in ((keys["trusted"], True), (keys["other"], False), (None, False)):
        root = tmp_path / f"served-{signer.key_id if signer else 'unsigned'}"
        signed_copy(tiny, root / "kws", signer)
        with cloud(root) as c:
            engine = runtime.Engine("kws", cloud_url=c.url, trusted_keys=[public(keys["trusted"])])
            r = engine.infer(x)
            assert r.source == "cloud" and r.partition_hint == "p1", r
            assert engine.wait_for_fetches(20)
        stats = engine.stats()
        if fetched:
            assert engine.cached_ids() == ["p1"] and stats.fetch_failures == 0, \
                stats.last_fetch_error
        else:
            assert engine.cached_ids() == [] and stats.fetch_failures == 1
            why = "which is not trusted" if signer else "not signed"
            assert why in stats.last_fetch_error, stats.last_fetch_error


def test_serve_takes_a_signing_key_for_the_learner_only_and_checks_it_first(tmp_path, keys):
    models = tmp_path / "models"
    write_tiny_models(models / "kws")
    runner = CliRunner()
    alone = runner.invoke(main, ["serve", "--models", str(models),
                                 "--signing-key", str(keys["trusted"].private)])
    assert alone.exit_code == 1 and "--signing-key only apply" in alone.output, alone.output
    bad = runner.invoke(main, ["serve", "--models", str(models), "--learn-exits",
                               "--signing-key", str(keys["trusted"].public)])
    assert bad.exit_code == 1 and "not an unencrypted PEM private key" in bad.output, bad.output


def test_online_learner_signs_the_version_it_publishes(tmp_path, keys):
    from knowcache.layer_cache.online import OnlineConfig, learner_for
    work = tmp_path / "vision"
    shutil.copytree(REPO / "models/vision", work)
    before = manifest.load(work).version
    config = OnlineConfig(signing_key=keys["trusted"].private)
    learner_for(work, config, cold=True, background=False, log=lambda _m: None)
    published = manifest.load(work)
    assert published.version == before + 1
    trusted = [public(keys["trusted"])]
    assert signing.verify(manifest.path_of(work).read_bytes(), published.signature,
                          [signing.parse_public(k) for k in trusted]) == keys["trusted"].key_id
    # What a device trusting the key loads: the staged program of the new version.
    engine = runtime.Engine.from_models_dir(work, staged=True, exit_gate="confidence",
                                            trusted_keys=trusted)
    assert engine.mode == "staged"


def needs_device() -> None:
    if not DEVICE.exists():
        pytest.skip("make build-cpp first (build/host/runtime_cpp/knowcache-device)")


def test_device_program_runs_only_a_models_folder_a_trusted_key_signed(tmp_path, keys):
    needs_device()
    image = tmp_path / "image.raw"
    image.write_bytes(bytes(28 * 28))
    good = signed_copy(REPO / "models/vision", tmp_path / "good", keys["trusted"])

    def run(models: Path, *flags) -> subprocess.CompletedProcess:
        return subprocess.run([str(DEVICE), "run", "--models", str(models), *map(str, flags),
                               str(image)], capture_output=True, text=True, timeout=120)
    ok = run(good, "--trusted-key", keys["other"].public, "--trusted-key", keys["trusted"].public)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[0])["label"], ok.stdout
    untrusted = run(good, "--trusted-key", keys["other"].public)
    assert untrusted.returncode == 1 and "which is not trusted" in untrusted.stderr
    unsigned = signed_copy(REPO / "models/vision", tmp_path / "unsigned", None)
    refused = run(unsigned, "--trusted-key", keys["trusted"].public)
    assert refused.returncode == 1 and "not signed" in refused.stderr
    assert run(unsigned).returncode == 0          # no keys: signatures are not checked
    required = run(unsigned, "--require-signature")
    assert required.returncode == 1 and "no trusted key" in required.stderr
    bad_key = run(good, "--trusted-key", keys["trusted"].private)
    assert bad_key.returncode == 1 and "--trusted-key" in bad_key.stderr
    helped = subprocess.run([str(DEVICE), "run", "--help"], capture_output=True, text=True)
    assert "--trusted-key FILE" in helped.stdout and "--require-signature" in helped.stdout
