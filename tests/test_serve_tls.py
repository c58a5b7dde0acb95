"""TLS between the device and `knowcache serve`: the server speaks HTTPS with a
certificate the openssl CLI makes at test time (a throwaway CA), the Python-bound
C++ engine verifies it (the right CA answers; a wrong CA, or no CA beyond the
system's, degrades with the reason; nothing falls back to plain HTTP), a bad
certificate/key pair is refused before anything loads, and no token is logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from knowcache.bench.cloud_process import free_port
from knowcache.cli import main
from knowcache.runtime import Engine, InvalidInputError
from knowcache.server import ServeConfig
from test_server import MODELS, TOKEN, running

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem signs server.pem (127.0.0.1, localhost); other_ca.pem signs nothing here."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other_ca"):
        openssl(d, "req", "-x509", *KEY, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=knowcache test {ca}")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(d, "req", "-new", *KEY, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext")
    return d


def image() -> np.ndarray:
    from knowcache.data import images
    return images.fashion_mnist().test.x[:1].astype(np.float32) / 255.0


def wait_https(url: str, ca: Path, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(url + "/readyz", verify=str(ca), timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def test_the_engine_speaks_https_and_verifies_the_server(pki):
    config = ServeConfig(models=MODELS, token=TOKEN)
    with running(config, ssl_certfile=str(pki / "server.pem"),
                 ssl_keyfile=str(pki / "server.key"),
                 ready_url=lambda u: wait_https(u, pki / "ca.pem")) as url:
        assert url.startswith("https://")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/healthz")  # the system's CAs do not know this one

        def engine(cloud_url, ca_file):
            return Engine.from_models_dir(MODELS / "vision", cloud_url=cloud_url, token=TOKEN,
                                          ca_file=ca_file, threshold=0.0, fetch_hints=False,
                                          connect_timeout_ms=2000)
        ok = engine(url, pki / "ca.pem").infer(image())
        assert ok.source == "cloud" and ok.uplink_bytes > 0
        for ca_file, reason in ((pki / "other_ca.pem", "does not verify"),
                                (None, "the system's CAs")):
            r = engine(url, ca_file).infer(image())
            assert r.source == "degraded" and "TLS" in r.degraded_reason, r.degraded_reason
            assert reason in r.degraded_reason, r.degraded_reason
        plain = engine(url.replace("https://", "http://"), None).infer(image())
        assert plain.source == "degraded"  # plain HTTP to the TLS port gets no answer
        with pytest.raises(InvalidInputError, match="use https://"):
            engine(url.replace("https://", "http://"), pki / "ca.pem")


def serve(*args):
    return CliRunner().invoke(main, ["serve", "--models", str(MODELS), *map(str, args)])


def test_serve_refuses_a_bad_certificate_pair_before_loading(pki, tmp_path):
    res = serve("--tls-cert", pki / "server.pem")
    assert res.exit_code != 0 and "--tls-cert and --tls-key go together" in res.output
    res = serve("--tls-cert", pki / "server.pem", "--tls-key", pki / "other_ca.key")
    assert res.exit_code != 0
    assert f"the key {pki / 'other_ca.key'} does not match the certificate" in res.output
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    res = serve("--tls-cert", garbage, "--tls-key", pki / "server.key")
    assert res.exit_code != 0 and f"cannot load the TLS certificate {garbage}" in res.output
    res = serve("--tls-cert", tmp_path / "missing.pem", "--tls-key", pki / "server.key")
    assert res.exit_code != 0 and "is not a file" in res.output
    assert "loaded" not in res.output  # refused before any model loads


def test_a_token_over_plain_http_beyond_loopback_is_warned_about():
    from knowcache.server import tls
    assert tls.token_in_clear("0.0.0.0", "t", tls=False)
    assert not tls.token_in_clear("0.0.0.0", "t", tls=True)
    assert not tls.token_in_clear("127.0.0.1", "t", tls=False)
    assert not tls.token_in_clear("0.0.0.0", None, tls=False)
    assert TOKEN not in repr(ServeConfig(models=MODELS, token=TOKEN))


def test_tokens_are_never_logged(pki, tmp_path):
    """Both sides at their most verbose: the server's log and the device's stderr
    hold neither the right token nor a wrong one."""
    from PIL import Image
    from knowcache.data import images
    secret, wrong = "t0ken-never-logged", "wr0ng-t0ken-never-logged"
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {**os.environ, "KNOWCACHE_LOG": "debug"}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "knowcache.cli", "serve", "--models", str(MODELS), "--port",
             str(port), "--token", secret, "--tls-cert", str(pki / "server.pem"), "--tls-key",
             str(pki / "server.key"), "--log-level", "debug"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_https(url, pki / "ca.pem", 120)
            x = image()
            for token in (secret, wrong, None):
                h = {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,1,28,28"}
                if token:
                    h["Authorization"] = f"Bearer {token}"
                httpx.post(url + "/v1/vision/infer", content=x.tobytes(), headers=h,
                           verify=str(pki / "ca.pem"), timeout=10)
            png = tmp_path / "item.png"
            Image.fromarray(images.fashion_mnist().test.x[0, 0]).save(png)
            device = subprocess.run(
                [sys.executable, "-m", "knowcache.cli", "infer", "--models",
                 str(MODELS / "vision"), "--cloud", url, "--ca-file", str(pki / "ca.pem"),
                 "--token", secret, "--json", str(png)],
                capture_output=True, text=True, env=env, timeout=120)
            assert device.returncode == 0, device.stderr
            assert json.loads(device.stdout)["source"] == "cloud"  # an ankle boot: "other"
        finally:
            proc.terminate()
            proc.wait(10)
    text = log.read_text() + device.stdout + device.stderr
    assert "POST /v1/vision/infer" in text  # the server did log the requests
    assert secret not in text and wrong not in text
