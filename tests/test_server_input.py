"""`knowcache serve`'s input path beyond tests/test_server.py: the bearer token is
checked before anything else on every route, a body sent without a
Content-Length (chunked) is held to the same limits as one that declares it, and
a declared wrong length is refused before the body is sent."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

from knowcache.server import ServeConfig
from test_server import batches_run, headers, running

MODELS = Path(__file__).resolve().parent.parent / "models"
TOKEN = "s3cret"
LIMIT = 100_000
VISION_BYTES = 28 * 28 * 4

TENSOR = {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,1,28,28"}
PCM16 = {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,16000",
         "X-Knowcache-Encoding": "pcm16"}

# (method, path, headers beyond the token, body, the status once the token is right)
REQUESTS = [
    ("POST", "/v1/vision/infer", TENSOR, b"\0" * VISION_BYTES, 200),  # a good request
    ("POST", "/v1/vision/infer", {"X-Knowcache-Dtype": "uint8", "X-Knowcache-Shape": "1,1,28,28"},
     b"\0" * VISION_BYTES, 400),                                   # wrong dtype
    ("POST", "/v1/vision/infer", {}, b"", 400),                     # no tensor headers
    ("POST", "/v1/vision/infer", {**TENSOR, "X-Knowcache-Shape": "1,x"}, b"", 400),  # bad shape
    ("POST", "/v1/vision/infer", TENSOR, np.full(28 * 28, np.nan, np.float32).tobytes(),
     400),                                                          # NaN values
    ("POST", "/v1/vision/infer", TENSOR, b"\0" * (LIMIT + 1), 413),  # over the body limit
    ("POST", "/v1/Vision!/infer", TENSOR, b"", 400),               # not a task name
    ("GET", "/v1/kws/partitions/p%201", {}, None, 400),             # not a partition id
    ("POST", "/v1/audio/infer", {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,16000"},
     b"", 404),                                                     # unknown task
    ("POST", "/v1/kws/infer", PCM16, b"\0" * 32000, 200),         # 16-bit audio, half the bytes
    ("POST", "/v1/kws/infer", {**PCM16, "X-Knowcache-Encoding": "gzip"}, b"\0" * 32000,
     400),                                                          # unknown encoding
    ("POST", "/v1/kws/infer", PCM16, b"\0" * 64000, 400),         # float32's length, not pcm16's
    ("POST", "/v1/kws/infer", {**PCM16, "X-Knowcache-Dtype": "int8"}, b"\0" * 32000,
     400),                                                          # pcm16 is for float32
    ("GET", "/v1/kws/manifest", {}, None, 200),
    ("GET", "/v1/audio/manifest", {}, None, 404),
    ("GET", "/v1/kws/manifest.sig", {}, None, 404),                 # the shipped ones are unsigned
    ("GET", "/v1/kws/partitions/p1", {}, None, 200),
    ("GET", "/v1/kws/partitions/p9", {}, None, 404),                # no such partition
    ("GET", "/v1/kws/layer-cache", {}, None, 404),                  # no --learn-exits
]


@pytest.fixture(scope="module")
def url():
    with running(ServeConfig(models=MODELS, token=TOKEN, max_body_bytes=LIMIT)) as u:
        yield u


@pytest.mark.parametrize("method, path, extra, body, status", REQUESTS,
                         ids=[f"{m} {p} {s}" for m, p, _, _, s in REQUESTS])
def test_the_token_is_checked_before_anything_else(url, method, path, extra, body, status):
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.request(method, url + path, headers={**extra, **auth}, content=body, timeout=10)
        assert r.status_code == 401, (auth, r.status_code, r.text[:200])
        assert r.json()["detail"] == "missing or wrong bearer token"
        assert r.headers["www-authenticate"] == "Bearer"
    # With the token the same request meets the check it was built to fail (or succeeds).
    r = httpx.request(method, url + path, headers={**extra, "Authorization": f"Bearer {TOKEN}"},
                      content=body, timeout=10)
    assert r.status_code == status, r.text[:200]


def test_every_v1_route_is_among_the_token_cases_and_the_ops_routes_are_open(url):
    """A route added under /v1 without a case above fails here; health, readiness,
    metrics and the API docs answer without the token (probes and scrapers)."""
    from knowcache.server import create_app
    app = create_app(ServeConfig(models=MODELS, token=TOKEN))
    v1 = {(m, r.path) for r in app.routes if r.path.startswith("/v1/") for m in r.methods}
    covered = {(m, re.sub(r"/partitions/[^/]+$", "/partitions/{partition_id}",
                          re.sub(r"^/v1/[^/]+/", "/v1/{task}/", p))) for m, p, *_ in REQUESTS}
    assert v1 == covered
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert httpx.get(url + path, timeout=10).status_code == 200, path


def test_the_token_is_checked_before_readiness(tmp_path):
    """A server with nothing to serve answers 503 to whoever holds the token, and
    401 to whoever does not."""
    from fastapi.testclient import TestClient

    from knowcache.server import create_app
    app = create_app(ServeConfig(models=tmp_path, token=TOKEN), load_in_background=False)
    with TestClient(app) as client:
        for method, path, extra, body, _ in REQUESTS:
            r = client.request(method, path, headers=extra, content=body)
            assert r.status_code == 401, (path, r.status_code, r.text[:200])
            r = client.request(method, path, content=body,
                               headers={**extra, "Authorization": f"Bearer {TOKEN}"})
            assert r.status_code in (503, 400), (path, r.status_code)
        r = client.get("/v1/vision/manifest", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 503 and "no <task>/manifest.json" in r.json()["detail"]


def chunks(total: int, size: int = 8192):
    """A body streamed without a Content-Length header."""
    while total > 0:
        yield b"\0" * min(size, total)
        total -= size


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(url):
    before = batches_run(url)
    r = httpx.post(url + "/v1/vision/infer", content=chunks(2 * LIMIT), headers=headers(),
                   timeout=10)
    assert r.status_code == 413 and f"over the {LIMIT}-byte limit" in r.json()["detail"]
    assert batches_run(url) == before


def test_a_chunked_body_of_the_wrong_length_is_refused(url):
    before = batches_run(url)
    r = httpx.post(url + "/v1/vision/infer", content=chunks(VISION_BYTES - 4), headers=headers(),
                   timeout=10)
    assert r.status_code == 400
    assert r.json()["detail"] == f"body is {VISION_BYTES - 4} bytes; shape [1, 1, 28, 28] of " \
                                 f"float32 is {VISION_BYTES}"
    # The right length, chunked, is answered.
    x = np.zeros((1, 1, 28, 28), np.float32)
    ok = httpx.post(url + "/v1/vision/infer", content=iter([x.tobytes()[:1000], x.tobytes()[1000:]]),
                    headers=headers(), timeout=10)
    assert ok.status_code == 200, ok.text[:200]
    assert batches_run(url) == before + 1


def read_response(s: socket.socket) -> str:
    """One HTTP response, head and body (a timeout if the server waits for more)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(4096)
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


@pytest.mark.parametrize("declared, status", [(10 * LIMIT, 413), (VISION_BYTES + 4, 400)])
def test_a_declared_wrong_length_is_refused_before_the_body_is_sent(url, declared, status):
    """The server answers from the Content-Length alone: a device on a slow link
    does not upload megabytes to hear that they were too many."""
    host, port = url.removeprefix("http://").split(":")
    head = (f"POST /v1/vision/infer HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nX-Knowcache-Dtype: float32\r\n"
            f"X-Knowcache-Shape: 1,1,28,28\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head.encode())          # and not one byte of the body
        answer = read_response(s)
    assert answer.startswith(f"HTTP/1.1 {status} "), answer[:200]
    assert f"body is {declared} bytes" in answer


def test_pcm16_carries_the_same_waveform_in_half_the_bytes(url):
    """X-Knowcache-Encoding: pcm16: int16 q, each value q / 32768; the answer is the
    one the float32 bytes of that waveform get."""
    rng = np.random.default_rng(0)
    q = rng.integers(-32768, 32768, 16000).astype("<i2")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    raw = httpx.post(url + "/v1/kws/infer", headers={**PCM16, **auth,
                                                     "X-Knowcache-Encoding": "raw"},
                     content=(q.astype(np.float32) / 32768).astype("<f4").tobytes(), timeout=10)
    packed = httpx.post(url + "/v1/kws/infer", headers={**PCM16, **auth}, content=q.tobytes(),
                        timeout=10)
    assert raw.status_code == packed.status_code == 200, packed.text[:200]
    a, b = raw.json(), packed.json()
    assert (a["label"], a["confidence"]) == (b["label"], b["confidence"])
    split = httpx.post(url + "/v1/kws/infer?from_stage=1", headers={**PCM16, **auth},
                       content=q.tobytes(), timeout=10)
    assert split.status_code == 400 and "the int8 activation" in split.json()["detail"]

