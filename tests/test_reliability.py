"""Fault runs (docs/reliability.md): the link relay's faults, and the cloud
stopped and restarted in the middle of a benchmark stream."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from knowcache.bench import link


@pytest.fixture
def echo_url():
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def one(c=conn):
                with c:
                    try:
                        while data := c.recv(65536):
                            c.sendall(data)
                    except OSError:
                        pass
            threading.Thread(target=one, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


def _echo_through(url: str, payload: bytes) -> bytes:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = s.recv(65536)
            if not data:
                break
            got += data
    return got


def test_the_relay_flips_one_bit_per_chunk_and_resets_on_loss(echo_url):
    payload = bytes(range(256)) * 4
    with link.relay_process(link.LinkProfile("t", 0, 1000, 0, corrupt=1.0), echo_url) as url:
        got = _echo_through(url, payload)
    assert len(got) == len(payload)
    flipped = sum(bin(a ^ b).count("1") for a, b in zip(got, payload))
    assert flipped == 2          # one bit on the way up, one on the way back
    with link.relay_process(link.LinkProfile("t", 0, 1000, 0, loss=1.0), echo_url) as url:
        with pytest.raises(ConnectionResetError):
            _echo_through(url, payload)
    with link.relay_process(link.LinkProfile("t", 0, 1000, 0), echo_url) as url:
        assert _echo_through(url, payload) == payload
    with pytest.raises(ValueError, match="probabilities in"):
        link.LinkProfile("t", 0, 1, 0, loss=1.5)


@pytest.mark.slow
def test_a_cloud_restarted_mid_stream_answers_again_and_nothing_a_device_holds_is_lost(
        quick_vision_build, tmp_path):
    models_root = quick_vision_build[0].parent
    out = tmp_path / "outage.json"
    res = subprocess.run(
        [sys.executable, "-m", "knowcache.cli", "bench", "--task", "vision", "--models",
         str(models_root), "--queries", "40", "--rtt-ms", "2", "--systems",
         "cloud_only,two_stage", "--cloud-stop-at", "10", "--cloud-back-at", "25",
         "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    report = json.loads(out.read_text())
    assert report["device"]["cloud_stop_at"] == 10 and report["device"]["cloud_back_at"] == 25
    only = report["traces"]["cloud_only"]["source"]
    assert only[:10] == ["cloud"] * 10 and only[10:25] == ["failed"] * 15
    assert only[25:] == ["cloud"] * 15                  # back with the first query after
    two = report["traces"]["two_stage"]["source"]
    assert "failed" not in two
    assert set(two[10:25]) <= {"local", "degraded"} and set(two[25:]) <= {"local", "cloud"}
    answers = report["systems"]["two_stage"]["answers"]
    assert answers["degraded"] == two.count("degraded") and sum(answers.values()) == 40


def test_cloud_back_at_needs_a_stop_before_it():
    from click.testing import CliRunner

    from knowcache.cli import main
    res = CliRunner().invoke(main, ["bench", "--task", "vision", "--cloud-back-at", "5"])
    assert res.exit_code != 0
    assert "--cloud-back-at needs --cloud-stop-at before it" in res.output
