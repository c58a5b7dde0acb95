"""Shared fixtures: tiny programs exported at test time and a scripted HTTP cloud.

The tiny models are linear classifiers whose logits are 10 * x[:C] (the first
C input features), so a test picks the confidence of an answer by choosing
its input. The scripted cloud stands in for `knowcache serve` (its own issue)
and can be told to fail in the ways a real network fails.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from knowcache import manifest
from knowcache.build import lower

FEATURES = 16


# No silent skips: where CI is set (or KNOWCACHE_FAIL_ON_SKIP=1), a skipped test fails the
# run. CI builds everything the suite needs, so a skip there is a test that did not run.
_skipped: list[tuple[str, str]] = []


def _skips_fail() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("KNOWCACHE_FAIL_ON_SKIP") == "1"


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if _skipped and _skips_fail() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped and _skips_fail():
        terminalreporter.section("skipped tests fail this run (CI or KNOWCACHE_FAIL_ON_SKIP=1)",
                                 red=True)
        for nodeid, reason in _skipped:
            terminalreporter.line(f"{nodeid}: {reason}")


# `make test` runs the suite in two pytest-xdist workers (then the `serial` tests alone):
# each worker gets its share of the cores, and so do the processes its tests start
# (OpenMP threads spinning beside another worker's make a training several times slower).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    _threads = max(1, len(os.sched_getaffinity(0)) // WORKERS)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)

# Torch state every test starts from, whatever ran before it: pytest-randomly reseeds
# `random` and NumPy, not torch. Its global RNG draws initial weights of any module
# built without a seed, and its thread count changes the order of float sums in
# training (a test that changes it would change what later trainings learn).
TORCH_THREADS = torch.get_num_threads()


def _reset_torch() -> None:
    torch.manual_seed(0)
    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _reset_torch()       # before the fixtures, which build models too


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    _reset_torch()       # the test body does not depend on what its fixtures drew


class Pick(nn.Module):
    """logits = scale * x[:, :classes]."""

    def __init__(self, classes: int, scale: float = 10.0):
        super().__init__()
        self.linear = nn.Linear(FEATURES, classes, bias=False)
        with torch.no_grad():
            w = torch.zeros(classes, FEATURES)
            w[torch.arange(classes), torch.arange(classes)] = scale
            self.linear.weight.copy_(w)

    def forward(self, x):
        return self.linear(x)


def confident(index: int) -> np.ndarray:
    """An input the Pick models answer with class ``index`` at entropy ~0."""
    x = np.zeros((1, FEATURES), np.float32)
    x[0, index] = 2.0
    return x


def unsure() -> np.ndarray:
    return np.zeros((1, FEATURES), np.float32)


PARTITIONS = {
    # id: (labels, other label)
    "cached": (["yes", "no", "other"], "other"),
    "p0": (["yes", "no", "up", "other"], "other"),
    "p1": (["down", "left", "right", "other"], "other"),
    "full": (["yes", "no", "up", "down", "left", "right"], None),
}
TASK_LABELS = ["yes", "no", "up", "down", "left", "right"]


def spoken_words(words) -> list[np.ndarray]:
    """Each word in a held-out espeak-ng voice, padded to the kws models' 1 s (1, 16000)."""
    from knowcache.data import audio, speech
    variants = speech.split_variants(speech.voice_variants(), speech.SynthConfig(seed=0))["test"]
    voice = speech.english_voices()[0]
    out = []
    for w in words:
        x = audio.trim(speech.synthesize(w, voice, variants[0], 50, 160), 16000)[:16000]
        padded = np.zeros((1, 16000), np.float32)
        padded[0, : len(x)] = x / (np.abs(x).max() + 1e-9) * 0.5
        out.append(padded)
    return out


def program_calls(pte: bytes, method: str | None = None) -> tuple[int, list[str]]:
    """What an ExecuTorch program's method (default: its first) runs: its XNNPACK
    delegate calls and the operators it runs outside them (portable kernels), by
    name."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    plans = deserialize_pte_binary(pte).program.execution_plan
    plan = plans[0] if method is None else next(p for p in plans if p.name == method)
    calls, ops = 0, []
    for instruction in plan.chains[0].instructions:
        args = instruction.instr_args
        if hasattr(args, "delegate_index"):
            calls += 1
        elif hasattr(args, "op_index"):
            ops.append(plan.operators[args.op_index].name)
    return calls, ops


def exits_outside_xnnpack(pte: bytes, staged: dict) -> dict[str, tuple[int, list[str]]]:
    """The exits of a staged program (``staged``: its manifest entry) that are not
    exactly one XNNPACK call with no operator beside it: method -> program_calls."""
    calls = {e["method"]: program_calls(pte, e["method"]) for e in staged["staged"]["exits"]}
    return {m: c for m, c in calls.items() if c != (1, [])}


# Operators a kws program may run outside XNNPACK: the zero padding it builds
# (tensors of a constant) and the input's alias.
SETUP_OPS = {"aten::full", "aten::alias_copy"}


@functools.cache
def tiny_program(classes: int) -> bytes:
    """The tiny program of ``classes`` outputs, lowered once per session: a `Pick` has
    no random weights, so every lowering gives the same bytes (about 4 s each; the
    suite writes these folders about 20 times)."""
    return lower.lower_to_pte(Pick(classes), (torch.zeros(1, FEATURES),))


def write_tiny_models(out: Path, **extra) -> Path:
    """Writes the four tiny programs and their manifest (with ``extra`` fields) to ``out``."""
    entries = []
    for pid, (labels, other) in PARTITIONS.items():
        pte = tiny_program(len(labels))
        name = lower.save_program(out, pid, pte)
        role = {"cached": manifest.Role.CACHED, "full": manifest.Role.FULL}.get(
            pid, manifest.Role.PARTITION)
        entries.append(manifest.partition_entry(pid, pte, role=role, labels=labels, file=name,
                                                input_shape=(1, FEATURES), threshold=0.3,
                                                other_label=other))
    manifest.write(out, "kws", TASK_LABELS, entries, **extra)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A models directory with a manifest and four tiny programs."""
    return write_tiny_models(tmp_path_factory.mktemp("models") / "kws")


def once_per_run(tmp_path_factory, name: str, make):
    """``make(tmp_path_factory)``, called once per test run: under pytest-xdist the first
    worker to ask makes it (holding a lock) and keeps a pickle of the result in the
    run's temporary root; the other workers wait for it and read that. Whatever the
    result names on disk stays where the maker wrote it, so tests must treat it as
    read-only (copy what they change), as they do with any session fixture."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make(tmp_path_factory)
    from filelock import FileLock
    root = tmp_path_factory.getbasetemp().parent       # shared by the run's workers
    result = root / f"{name}.pickle"
    with FileLock(str(root / f"{name}.lock")):
        if result.is_file():
            return pickle.loads(result.read_bytes())
        value = make(tmp_path_factory)
        result.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def quick_vision_build(tmp_path_factory):
    """The whole model build at toy scale (600 Fashion-MNIST images; the full
    model trains 8 epochs to about 70% accuracy, so teacher-student tests have a
    real teacher; students 3): full model, cached and generic students, 2
    CacheNet partitions, int8 export, calibration. Built once per run.

    Returns (models/vision folder, metrics, data, build log); ``folder.parent`` is a
    models root that `knowcache serve` and `knowcache bench` accept."""
    return once_per_run(tmp_path_factory, "quick_vision_build", _quick_vision_build)


def _quick_vision_build(tmp_path_factory):
    from knowcache.build import pipeline, publish
    from knowcache.data import images, store

    root = tmp_path_factory.mktemp("build")
    data = store.shrink(images.fashion_mnist(), (600, 200, 200), seed=0)
    cfg = pipeline.BuildConfig(task="vision", work=root / "work", quick=True, device="cpu",
                               k=2, full_epochs=8, student_epochs=3)
    logs: list[str] = []
    pipeline.train_full(cfg, data, logs.append)
    pipeline.run_specialize(cfg, data, logs.append)
    pipeline.run_partition(cfg, data, logs.append)
    out = root / "models" / "vision"
    # one process lowers (test_build_pipeline re-exports in two and compares the bytes)
    metrics = publish.publish(cfg, out, logs.append, data=data, workers=1)
    return out, metrics, data, logs


@pytest.fixture(scope="session")
def small_cnn_pte(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    path = tmp_path_factory.mktemp("cnn") / "cnn.pte"
    path.write_bytes(lower.lower_to_pte(model, (torch.zeros(1, 3, 16, 16),)))
    return path


class ScriptedCloud:
    """What the scripted server answers; tests change it between requests."""

    def __init__(self, models: Path):
        self.models = models
        self.mode = "ok"        # ok | 500 | garbage | slow | wrong_json | argmax
        self.label = "down"
        self.index = 3
        self.hint = ""
        self.token = ""         # required bearer token, "" for none
        self.slow_s = 2.0
        self.corrupt = set()    # partition ids served with a flipped byte
        self.requests: list[dict] = []

    def manifest_text(self) -> str:
        return (self.models / "manifest.json").read_text()


class _Handler(BaseHTTPRequestHandler):
    cloud: ScriptedCloud

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        if self.cloud.token and self.headers.get("Authorization") != f"Bearer {self.cloud.token}":
            self._send(401, b'{"detail": "missing or wrong bearer token"}')
            return False
        return True

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self.cloud.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if not self._authorized():
            return
        mode = self.cloud.mode
        if mode == "500":
            return self._send(500, b'{"detail": "model crashed"}')
        if mode == "garbage":
            return self._send(200, b"\x00\x01not json at all")
        if mode == "wrong_json":
            return self._send(200, b'{"label": 3}')
        if mode == "slow":
            time.sleep(self.cloud.slow_s)
        label, index = self.cloud.label, self.cloud.index
        if mode == "argmax":    # each input its own answer: the task label of its largest feature
            index = int(np.argmax(np.frombuffer(body, np.float32)))
            label = TASK_LABELS[index]
        answer = {"label": label, "index": index, "confidence": 0.97,
                  "partition_hint": self.cloud.hint, "model_version": 1, "server_ms": 0.5}
        self._send(200, json.dumps(answer).encode())

    def do_GET(self):
        self.cloud.requests.append({"path": self.path, "headers": dict(self.headers)})
        if not self._authorized():
            return
        if self.path == "/v1/kws/manifest":
            return self._send(200, self.cloud.manifest_text().encode())
        prefix = "/v1/kws/partitions/"
        if self.path.startswith(prefix):
            pid = self.path[len(prefix):]
            path = self.cloud.models / f"{pid}.pte"
            if not path.exists():
                return self._send(404, b'{"detail": "no such partition"}')
            data = bytearray(path.read_bytes())
            if pid in self.cloud.corrupt:
                data[len(data) // 2] ^= 0xFF
            return self._send(200, bytes(data), "application/octet-stream")
        self._send(404, b'{"detail": "not found"}')


@pytest.fixture
def cloud(tiny_models):
    """A scripted cloud on a free loopback port: yields (url, ScriptedCloud)."""
    state = ScriptedCloud(tiny_models)
    handler = type("Handler", (_Handler,), {"cloud": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class RayServeCluster:
    """The session's local Ray cluster with Serve's proxy on ``port``: ``running``
    deploys `knowcache serve --ray`'s application on it, 2 model replicas per task."""

    # 2 tasks x 2 replicas + the ingress fit twice in the cluster's 2 CPUs (a module's
    # app and a test's own), spread over its 2 nodes: a replica's compute thread count
    # is its whole CPUs, 1.
    SCALE = dict(min_replicas=2, max_replicas=2, replica_cpus=0.2, ingress_cpus=0.1)

    def __init__(self, port: int):
        self.port = port
        self._apps = 0
        self.last_app = ""       # the name of the application ``running`` deployed last
        self._prefixes: set[str] = set()     # the live applications' route prefixes

    @contextmanager
    def running(self, config, *, serve_config=None, **scale):
        """Deploys ``config`` as its own application (at "/" when that is free, else
        under "/<name>"); yields its base URL once ready; deletes it after. With
        ``serve_config`` (a Serve config file's path), what that file says instead, built
        the way `serve deploy FILE` builds it."""
        import yaml
        from ray import serve
        from ray._common.utils import import_attr
        from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

        from knowcache.bench.cloud_process import wait_until_ready
        from knowcache.server import ray_backend
        self._apps += 1
        name = self.last_app = f"knowcache{self._apps}"
        prefix = "/" if "/" not in self._prefixes else f"/{name}"
        self._prefixes.add(prefix)
        try:
            if serve_config is None:
                ray_backend.deploy(config, ray_backend.ScaleConfig(**{**self.SCALE, **scale}),
                                   name, prefix)
            else:
                spec = yaml.safe_load(Path(serve_config).read_text())["applications"][0]
                serve.run(call_user_app_builder_with_args_if_necessary(
                    import_attr(spec["import_path"]), spec["args"]), name=name,
                    route_prefix=prefix)
            url = f"http://127.0.0.1:{self.port}" + ("" if prefix == "/" else prefix)
            wait_until_ready(url, 60)
            yield url
        finally:
            serve.delete(name)
            self._prefixes.discard(prefix)


@pytest.fixture(scope="session")
def ray_serve():
    """One local Ray cluster of 2 nodes (separate raylets on this host, 1 CPU each, no
    dashboard) with Serve's proxy on the head node, shared by every test that needs
    Ray and shut down after them (skipped where `knowcache[ray]` is not installed)."""
    pytest.importorskip("ray.serve", reason="needs the knowcache[ray] extra")
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from knowcache.bench.cloud_process import free_port
    from knowcache.server import ray_backend
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        port = free_port()
        # One proxy: the nodes share this host's address, so a proxy per node would not bind.
        ray_backend.connect(cluster.address, None, "127.0.0.1", port, proxies="HeadOnly")
        yield RayServeCluster(port)
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            cluster.shutdown()
