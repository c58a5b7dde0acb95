"""`knowcache serve` in its own process, for benchmarks and tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


class CloudProcess:
    """A running `knowcache serve`; ``stop()`` ends it (also mid-benchmark)."""

    def __init__(self, models: Path, args: list[str] = (), ready_timeout_s: float = 120,
                 stop_timeout_s: float = 10):
        self.port = free_port()
        self._cmd = [sys.executable, "-m", "knowcache.cli", "serve", "--models", str(models),
                     "--port", str(self.port), "--log-level", "warning", *args]
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s     # `serve --ray` stops its cluster first
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        """Starts the server (again, after ``stop()``: same port, same models)."""
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "KNOWCACHE_LOG": "error"})
        try:
            wait_until_ready(self.url, self._ready_timeout_s, self._check_alive)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"knowcache serve exited: {self.proc.stderr.read()[-2000:]}")

    def peak_rss_mb(self) -> float | None:
        """The server process's peak resident memory so far (VmHWM), None when gone."""
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def cloud(models: Path, args: list[str] = (), **kw) -> Iterator[CloudProcess]:
    process = CloudProcess(models, list(args), **kw)
    try:
        yield process
    finally:
        process.stop()
