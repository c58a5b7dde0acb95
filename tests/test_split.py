"""Split computing: on a gate miss the device uploads the staged program's int8
activation at a cut stage and a real `knowcache serve` resumes from there
(`POST /v1/{task}/infer?from_stage=k`).

The tiny kws models get a tiny staged program exported at test time whose stage 2
reads the raw model input, as the shipped kws program's last stage does: a cut
before it is refused on the device and by the server, and with a cut after it a
recording relay in front of the server sees every body the device sends and none
of them holds the raw input."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from conftest import FEATURES, TASK_LABELS, write_tiny_models
from knowcache import manifest
from knowcache.bench.cloud_process import CloudProcess
from knowcache.layer_cache import program
from knowcache.layer_cache.heads import ExitHead, HeadConfig
from knowcache.layer_cache.staging import Stages
from knowcache.runtime import Engine, FailedPreconditionError, InvalidInputError, StagedModel

CUT = 3                      # after stage 2, which reads the raw input
ACTIVATION = [1, 6, 2, 2]    # what stages 2 and 3 (the head) take


class _Lift(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, 16)

    def forward(self, x):
        return torch.relu(self.linear(x)).reshape(-1, 4, 2, 2)


class _Mix(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)

    def forward(self, a):
        return torch.relu(self.conv(a))


class _ReadsInput(nn.Module):
    """Like the kws program's last stage: a branch from the model input joins in."""
    reads_input = True

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, 24)

    def forward(self, a, x):
        return a + self.linear(x).reshape(-1, 6, 2, 2)


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(24, len(TASK_LABELS))

    def forward(self, a):
        return self.linear(a.flatten(1)) * 4


HEAD_CONFIG = HeadConfig(grid=(1, 1), hidden=8, selector_hidden=4)


def _tiny_stages() -> Stages:
    torch.manual_seed(0)
    modules = [_Lift(), _Mix(), _ReadsInput()]
    return Stages(modules, _Head(), torch.zeros(1, FEATURES), [(1, 4, 2, 2), (1, 6, 2, 2),
                                                               (1, 6, 2, 2)],
                  [100, 100, 100], 100, [HEAD_CONFIG])


def _write_staged(out: Path) -> None:
    """Adds staged.pte (3 stages, one exit that never answers) to the tiny models."""
    stages = _tiny_stages()
    staged = program.lower(stages, [ExitHead(4, len(TASK_LABELS), HEAD_CONFIG)])
    never = {"learned": None, "confidence": None, "entropy": None, "activation": None}
    entry = program.entry("staged", staged, labels=TASK_LABELS, input_shape=[1, FEATURES],
                          thresholds=[never], feature_dims=[4], stage_us=[1.0] * 3,
                          exit_us=[1.0], head_us=1.0, target=0.99)
    (out / entry["file"]).write_bytes(staged.pte)
    current = manifest.load(out)
    manifest.write(out, current.parsed.task, current.parsed.labels,
                   current.doc["partitions"] + [entry])


def test_a_retrain_lowers_only_the_exits_into_the_bytes_of_a_whole_lowering():
    """program.lower keeps the stages lowered (Stages.lowered); a second program
    with other heads lowers only its exits, and its bytes are those of every
    method lowered together in one call (what it did before)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    stages = _tiny_stages()
    first = program.lower(stages, [ExitHead(4, len(TASK_LABELS), HEAD_CONFIG)])
    kept = stages.lowered
    assert kept is not None and set(kept.methods) == {"stage_0", "stage_1", "stage_2", "head"}
    torch.manual_seed(1)
    retrained = ExitHead(4, len(TASK_LABELS), HEAD_CONFIG).eval()
    second = program.lower(stages, [retrained])
    assert stages.lowered is kept and second.pte != first.pte

    x, methods = stages.input_example, {}
    with torch.no_grad():
        for i, m in enumerate(stages.modules):
            args = (x, stages.input_example) if i == 2 else (x,)
            methods[f"stage_{i}"] = torch.export.export(m.eval(), args)
            x = m(*args)
            if i == 0:
                methods["exit_0"] = torch.export.export(retrained, (x,))
        methods["head"] = torch.export.export(stages.head.eval(), (x,))
    whole = to_edge_transform_and_lower(methods, partitioner=[XnnpackPartitioner()])
    assert second.pte == whole.to_executorch().buffer


def test_stages_with_the_same_graphs_and_weights_are_lowered_once_per_process(monkeypatch):
    """Another Stages of the same modules (another learner or export of the same full
    model) takes the stages lowered before, with the same bytes; a changed weight
    lowers them anew."""
    stages = _tiny_stages()
    head = ExitHead(4, len(TASK_LABELS), HEAD_CONFIG).eval()
    first = program.lower(stages, [head])
    lowered = []
    real = program.to_xnnpack
    monkeypatch.setattr(program, "to_xnnpack", lambda p: lowered.append(set(p)) or real(p))
    again = _tiny_stages()
    assert program.lower(again, [head]).pte == first.pte
    assert again.lowered is stages.lowered and lowered == [{"exit_0"}]
    changed = _tiny_stages()
    with torch.no_grad():
        next(changed.modules[1].parameters()).add_(1.0)
    program.lower(changed, [head])
    assert changed.lowered is not stages.lowered
    assert lowered[1:] == [{"stage_0", "stage_1", "stage_2", "head"}, {"exit_0"}]


@pytest.fixture(scope="module")
def split_models(tmp_path_factory) -> Path:
    """A models root whose kws folder holds the tiny programs and the staged one."""
    root = tmp_path_factory.mktemp("split")
    _write_staged(write_tiny_models(root / "kws"))
    return root


class _Recorder(BaseHTTPRequestHandler):
    """Forwards each request to ``upstream`` and records it (method, path, headers, body)."""
    protocol_version = "HTTP/1.1"
    upstream: str
    seen: list[dict]

    def log_message(self, *args):
        pass

    def _relay(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append({"method": method, "path": self.path, "headers": dict(self.headers),
                          "body": body})
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request(method, self.path, body=body or None, headers=headers)
        res = conn.getresponse()
        data = res.read()
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    def do_POST(self):
        self._relay("POST")

    def do_GET(self):
        self._relay("GET")


@pytest.fixture(scope="module")
def serve(split_models):
    """A real `knowcache serve` of the split models (token "t0k"): yields its URL."""
    cloud = CloudProcess(split_models, ["--no-batching", "--token", "t0k"])
    yield cloud.url
    cloud.stop()


@pytest.fixture
def recorded(serve):
    """A recording relay in front of the server: yields (url, requests seen)."""
    seen: list[dict] = []
    handler = type("Relay", (_Recorder,), {"upstream": serve, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (1, FEATURES)).astype(np.float32) for _ in range(n)]


def _quantize(a: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-tensor symmetric int8 (float32, halves away from zero), computed apart from
    the runtime."""
    scale = np.float32(np.abs(a).max()) / np.float32(127) or np.float32(1)
    v = a.astype(np.float32) / scale
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int8), float(scale)


def test_raw_input_never_leaves_the_device_when_a_cut_point_is_used(split_models, recorded):
    url, seen = recorded
    models = split_models / "kws"
    # threshold 0: the gate rejects every local answer, so every query goes up.
    engine = Engine.from_models_dir(models, cloud_url=url, token="t0k", threshold=0.0,
                                    fetch_hints=False, split="always", split_cut=CUT)
    assert engine.config.split == "always" and engine.config.split_cut == CUT
    staged = StagedModel.from_file(str(models / "staged.pte"),
                                   manifest.load(models).parsed.find("staged"))
    xs = _inputs(40)
    results = [engine.infer(x) for x in xs]

    posts = [r for r in seen if r["method"] == "POST"]
    assert len(posts) == len(xs)
    raw = [x.tobytes() for x in xs]
    for x, r, post in zip(xs, results, posts):
        assert post["path"] == f"/v1/kws/infer?from_stage={CUT}"
        assert post["headers"]["X-Knowcache-Dtype"] == "int8"
        assert post["headers"]["X-Knowcache-Shape"] == ",".join(map(str, ACTIVATION))
        assert post["headers"]["X-Knowcache-Staged-Version"] == "1"
        assert len(post["body"]) == 24 != len(raw[0])
        assert not any(b in post["body"] for b in raw)
        # The body is the activation after stage 2, quantized, and the answer is the
        # staged program's head on it.
        act = x
        for k in range(CUT):
            act = staged.run_stage(k, act, x)
        q, scale = _quantize(act)
        assert np.frombuffer(post["body"], np.int8).tolist() == q.reshape(-1).tolist()
        assert float(post["headers"]["X-Knowcache-Scale"]) == pytest.approx(scale, rel=1e-6)
        logits = staged.run_head(q.astype(np.float32) * np.float32(scale))
        assert (r.source, r.uplink, r.uplink_bytes) == ("cloud", "features", 24)
        assert r.label == TASK_LABELS[int(np.argmax(logits))]
        p = np.exp(logits - logits.max())
        assert r.confidence == pytest.approx(p.max() / p.sum(), abs=1e-5)
    assert engine.stats().feature_uploads == len(xs)
    # Off, the same engine uploads the raw input: the relay sees it.
    plain = Engine.from_models_dir(models, cloud_url=url, token="t0k", threshold=0.0,
                                   fetch_hints=False)
    r = plain.infer(xs[0])
    assert (r.uplink, r.uplink_bytes) == ("raw", len(raw[0]))
    assert seen[-1]["body"] == raw[0] and seen[-1]["path"] == "/v1/kws/infer"


def test_a_cut_before_a_stage_that_reads_the_input_is_refused_on_the_device(split_models):
    for cut in (1, 2):
        with pytest.raises(FailedPreconditionError,
                           match=f"cannot be cut at stage {cut}: stage 2 reads the raw model "
                                 "input, so the cloud would need the raw input; cut at stage 3"):
            Engine.from_models_dir(split_models / "kws", cloud_url="http://127.0.0.1:9",
                                   split="auto", split_cut=cut)
    with pytest.raises(FailedPreconditionError, match="a cut stage must be in 1..3, got 4"):
        Engine.from_models_dir(split_models / "kws", split="always", split_cut=4)
    with pytest.raises(InvalidInputError, match="split mode 'sometimes' is not one of"):
        Engine.from_models_dir(split_models / "kws", split="sometimes", split_cut=1)


def _post(url: str, body: bytes, *, stage=CUT, version="1", shape="1,6,2,2", dtype="int8",
          scale="0.01", token="t0k") -> httpx.Response:
    headers = {"X-Knowcache-Dtype": dtype, "X-Knowcache-Shape": shape,
               "X-Knowcache-Scale": scale, "X-Knowcache-Staged-Version": version,
               "Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/v1/kws/infer?from_stage={stage}", content=body, headers=headers,
                      timeout=30)


@pytest.mark.parametrize("change, status, detail", [
    ({"token": "wrong", "version": "9"}, 401, "missing or wrong bearer token"),
    ({"version": "2"}, 409, "the upload is for staged program version 2 but this server runs "
                            "'staged' version 1"),
    ({"shape": "1,24"}, 409, "shape [1, 24] does not match the activation stage 3 of 'staged' "
                             "version 1 takes: [1, 6, 2, 2]"),
    ({"stage": 1}, 400, "from_stage=1: stage 2 of 'staged' reads the raw model input"),
    ({"stage": 4}, 400, "a cut is in 1..3"),
    ({"dtype": "float32"}, 400, "a split upload is int8"),
    ({"scale": "nan"}, 400, "X-Knowcache-Scale is 'nan'"),
    ({"scale": "-1"}, 400, "a finite number > 0"),
    ({"body": bytes(23)}, 400, "body is 23 bytes; shape [1, 6, 2, 2] of int8 is 24"),
])
def test_the_server_refuses_an_upload_it_cannot_resume(serve, change, status, detail):
    body = change.pop("body", bytes(range(24)))
    res = _post(serve, body, **change)
    assert res.status_code == status, res.text
    assert detail in res.json()["detail"]


def test_the_server_resumes_a_valid_upload_and_a_task_without_a_staged_program_says_so(
        serve, tiny_models):
    res = _post(serve, bytes(range(24)))
    assert res.status_code == 200, res.text
    assert res.json()["label"] in TASK_LABELS
    plain = CloudProcess(tiny_models.parent, ["--no-batching"])   # no staged program
    try:
        res = httpx.post(f"{plain.url}/v1/kws/infer?from_stage=1", content=bytes(4),
                         headers={"X-Knowcache-Dtype": "int8", "X-Knowcache-Shape": "1,4"})
        assert res.status_code == 404
        assert "no staged program to resume from" in res.json()["detail"]
    finally:
        plain.stop()


def test_the_bench_reports_uplink_bytes_of_raw_and_features(split_models):
    from knowcache.bench import harness, link
    from knowcache.bench.streams import QueryStream, StreamConfig
    from knowcache.bench.systems import SystemOptions, make_engine

    n = 12
    x = np.stack([v[0] for v in _inputs(n)])
    x[:, :3] *= 0.01          # the cached program is unsure: every query goes up
    stream = QueryStream(StreamConfig(queries=n), tuple(TASK_LABELS), tuple(TASK_LABELS),
                         np.arange(n), np.zeros(n, np.int64))
    config = harness.BenchConfig(models=split_models, task="kws", link=link.PROFILES["wifi"],
                                 systems=("two_stage", "two_stage_split"),
                                 options=SystemOptions(split_cut=CUT))
    models = manifest.load(split_models / "kws")
    runs = {name: harness.run_system(name, models, stream, x, config)
            for name in config.systems}
    raw, split = (harness.summarize(runs[s], stream.label, None) for s in config.systems)
    assert raw["uploads"] == {"raw": n, "features": 0}
    assert split["uploads"] == {"raw": 0, "features": n}
    assert raw["uplink_bytes_per_query"] == FEATURES * 4
    assert split["uplink_bytes_per_query"] == 24
    assert split["answers"]["cloud"] == n
    # The device ran the cached program and the stages before the cut; the cloud the rest.
    staged = models.require(manifest.Role.STAGED)
    assert (runs["two_stage_split"].cloud_flops == staged["staged"]["total_flops"] - 300).all()
    with pytest.raises(ValueError, match="two_stage_split: .*cannot be cut at stage 1"):
        make_engine("two_stage_split", models.parsed, "http://127.0.0.1:9",
                    SystemOptions(split_cut=1))


def test_a_task_whose_exit_learner_cannot_start_is_served_without_one(split_models):
    """--learn-exits on a folder whose full program this knowcache cannot read back
    into PyTorch (the tiny models' is no kws network): the task is still served,
    the reason is logged, and GET /v1/kws/layer-cache says it."""
    from fastapi.testclient import TestClient

    from knowcache.server import ServeConfig, create_app
    from knowcache.server import registry
    warned = []
    report = registry.load_all(split_models, learn_exits=True, log=lambda m: None,
                               warn=warned.append)
    task = report.tasks["kws"]
    assert task.learner is None and task.not_learning.startswith("RecoveryError")
    assert any("'kws' is served without learning its exits: RecoveryError" in w for w in warned)
    app = create_app(ServeConfig(models=split_models, learn_exits=True, batching=False),
                     report=report, load_in_background=False)
    with TestClient(app) as client:
        res = client.get("/v1/kws/layer-cache")
        assert res.status_code == 404 and "its learner could not start (RecoveryError" in res.text
        assert client.get("/v1/kws/manifest").status_code == 200
