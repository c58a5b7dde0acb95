"""`knowcache serve`'s input path beyond tests/test_server.py: the bearer token is
checked before anything else on every route, a body sent without a
Content-Length (chunked) is held to the same limits as one that declares it, and
a declared wrong length is refused before the body is sent."""

from __future__ import annotations

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

# (method, path, headers beyond the token, body, the status once the token is right)
REQUESTS = [
    ("POST", "/v1/vision/infer", {"X-Knowcache-Dtype": "uint8", "X-Knowcache-Shape": "1,1,28,28"},
     b"\0" * VISION_BYTES, 400),                                   # wrong dtype
    ("POST", "/v1/vision/infer", {}, b"", 400),                     # no tensor headers
    ("POST", "/v1/audio/infer", {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,16000"},
     b"", 404),                                                     # unknown task
    ("GET", "/v1/kws/manifest", {}, None, 200),
    ("GET", "/v1/audio/manifest", {}, None, 404),
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

