"""Privacy routing: inputs of the manifest's private classes never leave the device.

Each test streams inputs through the device Engine (the C++ core over real
programs) to a real HTTP server that records every request body it receives,
and checks the bodies against an independent computation of which inputs are
private (the local program run directly, softmax in NumPy): no private input
reached the server, and every other input the gate rejected did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FEATURES, PARTITIONS, write_tiny_models
from knowcache import manifest
from knowcache.runtime import Engine, FailedPreconditionError, Partition
from knowcache.server import ServeConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
SHARE = 0.2


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def expected_private(program: Partition, labels: list[str], private: set[str], x) -> bool:
    """The rule, computed apart from the engine: the answer is private, or private
    classes hold more than SHARE of the probability."""
    p = softmax(program.run(x).reshape(-1).astype(np.float64))
    mass = sum(p[i] for i, label in enumerate(labels) if label in private)
    return labels[int(p.argmax())] in private or mass > SHARE


@pytest.fixture(scope="module")
def private_models(tmp_path_factory) -> Path:
    """The tiny kws programs with "no" private (held by the cached program)."""
    return write_tiny_models(tmp_path_factory.mktemp("private") / "kws", private_labels=["no"])


def bodies(state) -> list[bytes]:
    return [r["body"] for r in state.requests if r["path"] == "/v1/kws/infer"]


def test_no_private_input_reaches_the_cloud_whatever_the_gate(private_models, cloud):
    url, state = cloud
    assert manifest.load(private_models).private_labels == ["no"]
    rng = np.random.default_rng(0)
    # Features 0..2 drive the cached program ("yes", "no", "other"): a spread of
    # confident, unsure, private-mass and "other" answers.
    xs = [np.zeros((1, FEATURES), np.float32) for _ in range(300)]
    for x in xs:
        x[0, :3] = rng.uniform(0, 0.5, 3).astype(np.float32)
    program = Partition.from_file(str(private_models / "cached.pte"))
    labels = PARTITIONS["cached"][0]
    private = [expected_private(program, labels, {"no"}, x) for x in xs]
    # threshold 0: the gate rejects every answer, so each public input is uploaded.
    engine = Engine.from_models_dir(private_models, cloud_url=url, threshold=0.0,
                                    private_share=SHARE, fetch_hints=False)
    results = [engine.infer(x) for x in xs]

    assert 50 < sum(private) < 250  # both kinds are in the stream
    received = bodies(state)
    private_bodies = {x.tobytes() for x, p in zip(xs, private) if p}
    assert not private_bodies & set(received)
    assert received == [x.tobytes() for x, p in zip(xs, private) if not p]
    for r, p in zip(results, private):
        assert r.is_private == p
        assert r.source == ("private" if p else "cloud")
        if p:
            assert r.uplink_bytes == 0 and r.kept_reason and 0 < r.confidence <= 1
    stats = engine.stats()
    assert stats.kept_private == sum(private)
    assert stats.cloud == len(received)


def test_a_confident_private_answer_is_local_and_flagged(private_models, cloud):
    url, state = cloud
    engine = Engine.from_models_dir(private_models, cloud_url=url, fetch_hints=False)
    x = np.zeros((1, FEATURES), np.float32)
    x[0, 1] = 2.0  # "no", entropy ~0: the gate accepts it
    r = engine.infer(x)
    assert (r.source, r.label, r.is_private) == ("local", "no", True)
    assert r.private_mass > 0.99
    x[0, 1] = 0.1  # "no" barely ahead: the gate rejects it, yet it stays
    r = engine.infer(x)
    assert (r.source, r.label, r.is_private) == ("private", "no", True)
    assert "'no' is a private class" in r.kept_reason
    assert bodies(state) == []


def test_local_only_never_calls_the_cloud(private_models, cloud):
    url, state = cloud
    engine = Engine.from_models_dir(private_models, cloud_url=url, local_only=True,
                                    threshold=0.0)
    x = np.zeros((1, FEATURES), np.float32)
    x[0, 2] = 2.0  # "other": always uploaded by a connected engine
    r = engine.infer(x)
    assert r.source == "local_only" and not r.is_private
    assert "local-only" in r.kept_reason
    assert state.requests == []
    assert engine.stats().kept_local_only == 1


def test_a_private_class_no_installed_model_holds_is_never_uploaded(private_models, cloud):
    """p1 (down, left, right) cannot see "no": its share is unknown, so nothing the
    gate rejects is uploaded; a cold device refuses instead of uploading."""
    url, state = cloud
    engine = Engine.from_models_dir(private_models, cloud_url=url, install=["p1"],
                                    fetch_hints=False)
    r = engine.infer(np.zeros((1, FEATURES), np.float32))
    assert r.source == "private" and "held by no installed model" in r.kept_reason
    cold = Engine("kws", manifest=engine.manifest, cloud_url=url)
    with pytest.raises(FailedPreconditionError, match="not uploaded"):
        cold.infer(np.zeros((1, FEATURES), np.float32))
    assert state.requests == []


def test_the_build_refuses_a_private_class_no_device_program_holds():
    entries = [{"id": "cached", "role": "cached", "labels": ["yes", "no", "other"]},
               {"id": "full", "role": "full", "labels": ["yes", "no", "up"]}]
    manifest.check_private_labels(["no"], entries)
    with pytest.raises(ValueError, match="private_labels: 'up' is held by no device program"):
        manifest.check_private_labels(["no", "up"], entries)


class RecordingApp:
    """ASGI middleware: reads and records every request body before the app sees it."""

    def __init__(self, app):
        self.app = app
        self.requests: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.requests.append((scope["method"], scope["path"], body))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def private_vision(tmp_path: Path) -> Path:
    """The shipped vision manifest with "bag" private, and its cached program."""
    device = tmp_path / "vision"
    device.mkdir()
    shipped = manifest.load(MODELS / "vision")
    shutil.copy(MODELS / "vision" / "cached.pte", device / "cached.pte")
    manifest.write(device, shipped.task, shipped.labels, shipped.entries(),
                   version=shipped.version, private_labels=["bag"])
    return device


def test_knowcache_serve_receives_no_private_image(tmp_path):
    """The real server over the shipped vision models, fed by the device engine on
    Fashion-MNIST test images with "bag" private: none of its inputs arrives."""
    from knowcache.data import images
    from test_server import running

    device = private_vision(tmp_path)
    shipped = manifest.load(device)
    ds = images.fashion_mnist()
    xs = [x[None].astype(np.float32) / 255.0 for x in ds.test.x[:120]]
    program = Partition.from_file(str(device / "cached.pte"))
    labels = list(shipped.entry("cached")["labels"])
    private = [expected_private(program, labels, {"bag"}, x) for x in xs]

    recorder = {}

    def wrap(app):
        recorder["app"] = RecordingApp(app)
        return recorder["app"]

    with running(ServeConfig(models=MODELS), wrap=wrap) as url:
        engine = Engine.from_models_dir(device, cloud_url=url, threshold=0.0,
                                        private_share=SHARE, fetch_hints=False)
        results = [engine.infer(x) for x in xs]
    received = [b for m, path, b in recorder["app"].requests if path == "/v1/vision/infer"]
    assert sum(private) >= 5 and len(received) >= 50
    assert not {x.tobytes() for x, p in zip(xs, private) if p} & set(received)
    assert received == [x.tobytes() for x, p in zip(xs, private) if not p]
    assert [r.source for r in results] == ["private" if p else "cloud" for p in private]
    bags = [r for r, y in zip(results, ds.test.y[:120]) if ds.labels[int(y)] == "bag"]
    assert bags and sum(r.is_private for r in bags) >= 0.8 * len(bags)


def test_knowcache_infer_prints_private_and_local_only(tmp_path, closed_port_url):
    from click.testing import CliRunner
    from PIL import Image

    from knowcache.cli import main
    from knowcache.data import images
    device = private_vision(tmp_path)
    test = images.fashion_mnist().test
    files = []
    for name, y in (("bag", 8), ("boot", 9)):  # private; left to the cloud ("other")
        for i in np.flatnonzero(test.y == y)[:3]:
            files.append(tmp_path / f"{name}{i}.png")
            Image.fromarray(test.x[i, 0]).save(files[-1])

    def infer(*args):
        res = CliRunner().invoke(main, ["infer", "--models", str(device), *args, *map(str, files)],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res

    lines = infer("--json", "--cloud", closed_port_url).stdout.splitlines()
    got = [json.loads(line) for line in lines]
    bags, boots = got[:3], got[3:]
    # The cached model is sure of these bags: local answers, flagged private.
    assert all(g["private"] and (g["label"], g["source"]) == ("bag", "local") for g in bags), bags
    assert all(g["source"] == "degraded" and "private" not in g for g in boots), boots
    local_only = [json.loads(line) for line in infer("--json", "--local-only").stdout.splitlines()]
    assert [g["source"] for g in local_only[3:]] == ["local_only"] * 3
    text = infer("--local-only")
    assert "local_only" in text.stdout
    assert "note: local_only: kept on the device: local-only mode" in text.stderr
