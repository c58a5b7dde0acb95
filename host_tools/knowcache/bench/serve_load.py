"""Load benchmark of the cloud tier: throughput and p50/p99 latency at several
client counts, with dynamic batching on and off, on loopback.

Each configuration starts its own `knowcache serve` process, waits for
/readyz, then runs `knowcache.bench.load_client` (locust) for a bounded time
and request count per client count.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until_ready(url: str, timeout_s: float, check=lambda: None) -> None:
    """Polls GET /readyz until 200; ``check`` may raise to give up early."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        check()
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready in {timeout_s:g} s")


@contextmanager
def server(models: Path, batching: bool, extra: list[str]):
    port = free_port()
    cmd = [sys.executable, "-m", "knowcache.cli", "serve", "--models", str(models), "--port",
           str(port), "--log-level", "warning", "--batching" if batching else "--no-batching",
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KNOWCACHE_LOG": "error"})
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"knowcache serve exited: {proc.stderr.read()[-2000:]}")
    try:
        wait_until_ready(url, 120, alive)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(models: Path, task: str, clients: list[int], seconds: float, max_requests: int,
        server_args: list[str], log=print) -> list[dict]:
    rows = []
    for batching in (True, False):
        with server(models, batching, server_args) as url:
            for users in clients:
                res = subprocess.run(
                    [sys.executable, "-m", "knowcache.bench.load_client", "--url", url,
                     "--task", task, "--users", str(users), "--seconds", str(seconds),
                     "--max-requests", str(max_requests)],
                    capture_output=True, text=True, timeout=seconds + 120)
                lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
                if res.returncode != 0 or not lines:
                    raise RuntimeError(f"load client failed: {res.stderr[-2000:]}")
                row = {"batching": batching, **json.loads(lines[-1])}
                log(f"batching {'on ' if batching else 'off'} {users:3d} clients: "
                    f"{row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, failures {row['failures']}")
                rows.append(row)
    return rows
