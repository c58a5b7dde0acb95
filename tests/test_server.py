"""`knowcache serve` end to end: the real server (uvicorn on a free loopback
port) over the shipped models, driven from Python (httpx) and from the C++
runtime's CloudClient and Engine."""

from __future__ import annotations

import asyncio
import atexit
import math
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from knowcache import _runtime
from knowcache.bench.cloud_process import wait_until_ready
from knowcache.data import images
from knowcache.runtime import Engine, Manifest
from knowcache.server import ServeConfig, create_app, registry

MODELS = Path(__file__).resolve().parent.parent / "models"
# What the servers here serve: kws and vision (links into models/). cifar10's 20 MB
# of programs would only slow every server start; test_image_tasks serves an image task.
SERVED = Path(tempfile.mkdtemp(prefix="knowcache-served-"))
for _task in ("kws", "vision"):
    (SERVED / _task).symlink_to(MODELS / _task, target_is_directory=True)
atexit.register(shutil.rmtree, SERVED, True)
TOKEN = "s3cret"


# Where `running` serves: None for uvicorn in a thread; tests/test_serve_ray_http.py,
# which runs these tests again on Ray Serve, sets it to RayServeCluster.running.
on_ray = None


@contextmanager
def running(config: ServeConfig, *, wrap=None, ready_url=None, **uvicorn_options):
    """Starts uvicorn with ``config`` in a thread; yields the base URL once ready.
    ``wrap`` wraps the app (an ASGI middleware); ``uvicorn_options`` (ssl_certfile,
    ssl_keyfile...) make an https server, checked ready through ``ready_url(url)``."""
    if on_ray is not None:
        assert wrap is None and not uvicorn_options, "not on the Ray back end"
        with on_ray(config) as url:
            yield url
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    app = create_app(config)
    if wrap is not None:
        app = wrap(app)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           **uvicorn_options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        (ready_url or (lambda u: wait_until_ready(u, 60)))(url)
    except RuntimeError:
        server.should_exit = True
        raise
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def url():
    with running(ServeConfig(models=SERVED, token=TOKEN, max_body_bytes=100_000)) as u:
        yield u


@pytest.fixture(scope="module")
def vision_test():
    ds = images.fashion_mnist()
    return ds.test.x[:200].astype(np.float32) / 255.0, ds.test.y[:200].astype(int)


def headers(shape=(1, 1, 28, 28), dtype="float32", token=TOKEN) -> dict:
    h = {"X-Knowcache-Dtype": dtype, "X-Knowcache-Shape": ",".join(map(str, shape))}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def infer(url, x, task="vision", **kw):
    return httpx.post(f"{url}/v1/{task}/infer", content=np.ascontiguousarray(x).tobytes(),
                      headers=headers(**kw), timeout=10)


def batches_run(url) -> float:
    text = httpx.get(url + "/metrics").text
    line = [l for l in text.splitlines() if l.startswith("knowcache_batch_size_count")][0]
    return float(line.split()[-1])


def test_health_and_readiness(url):
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/readyz").json()["tasks"] == ["kws", "vision"]


def test_infer_answers_like_the_full_model(url, vision_test):
    x, y = vision_test
    answers = [infer(url, x[i:i + 1]).json() for i in range(40)]
    full = _runtime.Partition.from_file(str(MODELS / "vision/full.pte"))
    assert [a["index"] for a in answers] == [int(np.argmax(full.run(x[i:i + 1])))
                                             for i in range(40)]
    for i, answer in enumerate(answers):    # the softmax of the program's logits, by hand
        logits = full.run(x[i:i + 1]).reshape(-1).astype(np.float64)
        p = np.exp(logits - logits.max())
        assert answer["confidence"] == pytest.approx(p.max() / p.sum(), abs=1e-6)
    a = answers[0]
    assert set(a) == {"label", "index", "confidence", "partition_hint", "model_version",
                      "server_ms"}
    manifest = Manifest.load(str(MODELS / "vision/manifest.json"))
    assert a["label"] == manifest.labels[a["index"]]
    hint = manifest.find(a["partition_hint"])
    assert hint.role == "partition" and a["label"] in hint.labels
    assert a["model_version"] == manifest.version


@pytest.mark.parametrize("kw, status, message", [
    ({"dtype": "uint8"}, 400, "takes float32"),
    ({"shape": (1, 28, 28)}, 400, "does not match"),
    ({"shape": ("a", 2)}, 400, "comma-separated"),
    ({"token": None}, 401, "bearer token"),
    ({"token": "wrong"}, 401, "bearer token"),
])
def test_bad_requests_never_reach_the_model(url, vision_test, kw, status, message):
    before = batches_run(url)
    r = infer(url, vision_test[0][:1], **kw)
    assert r.status_code == status and message in r.json()["detail"]
    assert batches_run(url) == before


def test_body_checks(url, vision_test):
    x = vision_test[0][:1]
    short = httpx.post(url + "/v1/vision/infer", content=x.tobytes()[:-4], headers=headers())
    assert short.status_code == 400 and "3132 bytes" in short.json()["detail"]
    big = httpx.post(url + "/v1/vision/infer", content=b"\0" * 200_000, headers=headers())
    assert big.status_code == 413
    bad = x.copy()
    bad[0, 0, 3, 3] = math.nan
    assert infer(url, bad).status_code == 400
    bad[0, 0, 3, 3] = math.inf
    assert "NaN or infinite" in infer(url, bad).json()["detail"]
    before = batches_run(url)
    unscaled = x * 255      # pixels in [0, 255] sent to a model of [0, 1] (value_range)
    r = infer(url, unscaled)
    first = int(np.flatnonzero(unscaled.reshape(-1) > 1)[0])
    # the engine's own check (InputSpec.check), named by task
    assert r.status_code == 400 and (f"task 'vision': input element {first} is "
                                     f"{unscaled.reshape(-1)[first]:g}, outside the model's "
                                     "value_range [0, 1]; scale the input") in r.json()["detail"]
    assert batches_run(url) == before
    unknown = infer(url, x, task="audio")
    assert unknown.status_code == 404 and "kws, vision" in unknown.json()["detail"]


def test_manifest_and_partitions(url):
    r = httpx.get(url + "/v1/kws/manifest", headers=headers())
    assert Manifest.parse(r.text).task == "kws"
    r = httpx.get(url + "/v1/kws/partitions/p1", headers=headers())
    data = (MODELS / "kws/p1.pte").read_bytes()
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{_runtime.sha256_hex(data)}"'
    again = httpx.get(url + "/v1/kws/partitions/p1",
                      headers={**headers(), "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    missing = httpx.get(url + "/v1/kws/partitions/p9", headers=headers())
    assert missing.status_code == 404 and "p0" in missing.json()["detail"]
    assert httpx.get(url + "/v1/kws/manifest").status_code == 401
    metrics = httpx.get(url + "/metrics").text
    assert 'knowcache_partition_downloads_total{partition="p1",task="kws"}' in metrics
    assert "knowcache_request_seconds_bucket" in metrics


def test_openapi_describes_every_route(url):
    doc = httpx.get(url + "/openapi.json").json()
    assert {"/v1/{task}/infer", "/v1/{task}/manifest", "/v1/{task}/partitions/{partition_id}",
            "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])
    body = doc["paths"]["/v1/{task}/infer"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in body
    params = {p["name"]: p for p in doc["paths"]["/v1/{task}/infer"]["post"]["parameters"]}
    # Only what the served tasks take: listing uint8 promised what the server refuses.
    assert params["x-knowcache-dtype"]["schema"]["enum"] == ["float32"]


def test_kws_through_the_cloud_client(url):
    from knowcache.data import speech
    wave = speech.synthesize("yes", "en-us", "m3", 50, 160)
    x = np.zeros((1, 16000), np.float32)
    x[0, 2000:2000 + min(len(wave), 14000)] = wave[:14000]
    client = _runtime.CloudClient(_runtime.CloudClientConfig(base_url=url, token=TOKEN))
    answer = client.infer("kws", x)
    assert answer.label == "yes" and answer.partition_hint


def test_device_engine_warms_its_cache_from_the_cloud(url, vision_test):
    x, y = vision_test
    client = _runtime.CloudClient(_runtime.CloudClientConfig(base_url=url, token=TOKEN))
    engine = Engine("vision", slots=1, cloud_url=url, token=TOKEN,
                    manifest=client.fetch_manifest("vision"))
    assert engine.cached_ids() == []
    sneakers = [i for i in range(len(y)) if y[i] in (7, 9)]   # sneaker, ankle-boot: one partition
    first = engine.infer(x[sneakers[0]:sneakers[0] + 1])
    assert first.source == "cloud" and first.partition_hint
    assert engine.wait_for_fetches(10)
    assert engine.cached_ids() == [first.partition_hint]
    later = [engine.infer(x[i:i + 1]) for i in sneakers[1:25]]
    local = [r for r in later if r.source == "local"]
    assert len(local) >= 5
    assert np.mean([r.index == y[i] for r, i in zip(later, sneakers[1:25])]) > 0.8


def test_full_queue_answers_429_with_retry_after():
    with running(ServeConfig(models=SERVED, queue_limit=1, max_batch=1)) as u:
        x = images.fashion_mnist().test.x[:1].astype(np.float32) / 255.0

        async def burst():
            async with httpx.AsyncClient(timeout=30) as c:
                return await asyncio.gather(*[
                    c.post(u + "/v1/vision/infer", content=x.tobytes(),
                           headers=headers(token=None)) for _ in range(60)])
        results = asyncio.run(burst())
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    assert all(r.headers.get("retry-after") == "1" for r in results if r.status_code == 429)


def test_request_timeout_answers_504():
    with running(ServeConfig(models=SERVED, request_timeout_s=0.0005, max_wait_ms=5)) as u:
        x = images.fashion_mnist().test.x[:1].astype(np.float32) / 255.0
        r = httpx.post(u + "/v1/vision/infer", content=x.tobytes(), headers=headers(token=None))
    assert r.status_code == 504 and "no answer within" in r.json()["detail"]


def test_missing_models_folder_is_not_ready(tmp_path):
    app = create_app(ServeConfig(models=tmp_path))
    from fastapi.testclient import TestClient
    with TestClient(app) as client:
        time.sleep(0.3)
        r = client.get("/readyz")
        assert r.status_code == 503 and "manifest.json" in r.json()["detail"]
        r = client.post("/v1/kws/infer", content=b"", headers=headers(token=None))
        assert r.status_code == 503


def test_bearer_scheme_is_case_insensitive_and_missing_headers_get_a_sentence(url, vision_test):
    x = vision_test[0][:1]
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = httpx.post(url + "/v1/vision/infer", content=x.tobytes(),
                       headers={**headers(token=None), "Authorization": f"{scheme} {TOKEN}"})
        assert r.status_code == 200, (scheme, r.text)
    r = httpx.post(url + "/v1/vision/infer", content=x.tobytes(),
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "the X-Knowcache-Dtype header is missing" in detail
    assert "X-Knowcache-Shape header is missing" in detail and "e.g. float32" in detail


def raw_request(url: str, head: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(head.encode() + body)
    return s


def test_a_body_shorter_than_its_content_length_times_out_and_a_disconnect_is_quiet():
    import logging
    config = ServeConfig(models=SERVED, body_timeout_s=0.5)
    head = ("POST /v1/vision/infer HTTP/1.1\r\nHost: x\r\nX-Knowcache-Dtype: float32\r\n"
            "X-Knowcache-Shape: 1,1,28,28\r\nContent-Length: 3136\r\n\r\n")
    records: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = records.append
    with running(config) as u:
        # After uvicorn configured its loggers (which drops handlers it did not set).
        for name in ("uvicorn.error", "knowcache.serve"):
            logging.getLogger(name).addHandler(catch)
        try:
            s = raw_request(u, head, b"\0" * 100)
            t0 = time.monotonic()
            reply = b""
            while b"}" not in reply and time.monotonic() - t0 < 5:
                reply += s.recv(4096)
            s.close()
            assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in reply
            s = raw_request(u, head, b"\0" * 100)
            time.sleep(0.1)
            s.close()
            time.sleep(0.5)
            assert httpx.get(u + "/healthz").status_code == 200
        finally:
            for name in ("uvicorn.error", "knowcache.serve"):
                logging.getLogger(name).removeHandler(catch)
    tracebacks = [r for r in records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def ready(client) -> None:
    for _ in range(100):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(client.get("/readyz").text)


def copy_models(tmp_path: Path, tasks=("vision",)) -> Path:
    import shutil
    root = tmp_path / "models"
    for task in tasks:
        shutil.copytree(MODELS / task, root / task)
    return root


def test_partition_bytes_are_verified_at_load_and_the_etag_is_their_hash(tmp_path):
    root = copy_models(tmp_path)
    with open(root / "vision/p1.pte", "ab") as f:
        f.write(b"\0")                           # no longer what the manifest says
    lines = []
    report = registry.load_all(root, log=lines.append, warn=lines.append)
    assert list(report.tasks) == ["vision"]
    assert any("refused partition vision/p1" in l and "rebuild or re-copy" in l for l in lines)
    from fastapi.testclient import TestClient
    with TestClient(create_app(ServeConfig(models=root), report=report)) as client:
        ready(client)
        bad = client.get("/v1/vision/partitions/p1")
        assert bad.status_code == 503 and "p1.pte is 1" in bad.json()["detail"]
        good = client.get("/v1/vision/partitions/p0")
        assert good.headers["etag"] == f'"{_runtime.sha256_hex(good.content)}"'
        (root / "vision/p0.pte").write_bytes(b"changed after load")
        again = client.get("/v1/vision/partitions/p0")
        assert again.content == good.content and again.headers["etag"] == good.headers["etag"]


def test_a_broken_task_is_refused_and_logged_while_the_healthy_one_is_served(tmp_path):
    root = copy_models(tmp_path, ("vision", "kws"))
    (root / "kws/full.pte").write_bytes(b"not a program")
    lines = []
    report = registry.load_all(root, log=lines.append, warn=lines.append)
    assert list(report.tasks) == ["vision"] and str(root / "kws") in report.refused
    assert any(l.startswith(f"refused task folder {root / 'kws'}") for l in lines), lines
    assert any(l.startswith("loaded task 'vision'") for l in lines), lines
    from fastapi.testclient import TestClient
    with TestClient(create_app(ServeConfig(models=root), report=report)) as client:
        ready(client)
        assert client.get("/readyz").json()["tasks"] == ["vision"]
        assert client.get("/v1/kws/manifest").status_code == 404


def test_serve_exits_non_zero_when_no_task_loads_and_says_why(tmp_path):
    from click.testing import CliRunner

    from knowcache.cli import main
    res = CliRunner().invoke(main, ["serve", "--models", str(MODELS / "kws")])
    assert res.exit_code == 1
    assert f"is one task's folder; pass its parent (--models {MODELS})" in res.output
    assert "nothing to serve" in res.output
    root = copy_models(tmp_path)
    (root / "vision/full.pte").write_bytes(b"broken")
    res = CliRunner().invoke(main, ["serve", "--models", str(root)])
    assert res.exit_code == 1 and "its full model is refused" in res.output


def test_serve_exit_learner_options_need_learn_exits_and_bars_in_range():
    from click.testing import CliRunner

    from knowcache.cli import main
    from knowcache.layer_cache.online import OnlineConfig
    res = CliRunner().invoke(main, ["serve", "--models", str(MODELS), "--fidelity-floor", "0.9",
                                    "--min-gain", "0"])
    assert res.exit_code == 1
    assert ("--fidelity-floor, --min-gain only apply to the exit learner; add --learn-exits"
            in res.output)
    res = CliRunner().invoke(main, ["serve", "--models", str(MODELS), "--learn-exits",
                                    "--min-gain", "2"])
    assert res.exit_code == 2 and "Invalid value for '--min-gain'" in res.output
    with pytest.raises(ValueError, match=r"savings_slack must be in \[0, 1\] and min_gain in "
                                         r"\[-1, 1\]"):
        OnlineConfig(savings_slack=1.5)
    with pytest.raises(ValueError, match="verify_gate 'oracle' is not a gate; use one of learned"):
        OnlineConfig(verify_gate="oracle")


def test_swagger_ui_is_served_without_a_cdn(url):
    page = httpx.get(url + "/docs")
    assert page.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in page.text
    assert "cdn." not in page.text and "https://" not in page.text.split("<body>")[0]
    js = httpx.get(url + "/static/swagger/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert httpx.get(url + "/static/swagger/swagger-ui.css").status_code == 200
