"""Load benchmark of the cloud tier: throughput and p50/p99 latency at several
client counts, on loopback: with dynamic batching on and off, or (``ray``) the
uvicorn back end against the Ray Serve one (`serve --ray`), both batching.

Each configuration starts its own `knowcache serve` process, waits for
/readyz, then runs `knowcache.bench.load_client` (locust) for a bounded time
and request count per client count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from knowcache.bench.cloud_process import cloud

# A local Ray cluster of this machine's cores, one model replica per task.
RAY_ARGS = ["--ray", "local", "--min-replicas", "1", "--max-replicas", "1"]


def run(models: Path, task: str, clients: list[int], seconds: float, max_requests: int,
        server_args: list[str], log=print, ray: bool = False) -> list[dict]:
    configs = [("uvicorn", True), ("ray", True)] if ray else [("uvicorn", True),
                                                               ("uvicorn", False)]
    rows = []
    for backend, batching in configs:
        args = ["--batching" if batching else "--no-batching", *server_args]
        on_ray = backend == "ray"
        with cloud(models, [*args, *RAY_ARGS] if on_ray else args,
                   stop_timeout_s=60 if on_ray else 10) as c:
            url = c.url
            for users in clients:
                res = subprocess.run(
                    [sys.executable, "-m", "knowcache.bench.load_client", "--url", url,
                     "--task", task, "--users", str(users), "--seconds", str(seconds),
                     "--max-requests", str(max_requests)],
                    capture_output=True, text=True, timeout=seconds + 120)
                lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
                if res.returncode != 0 or not lines:
                    raise RuntimeError(f"load client failed: {res.stderr[-2000:]}")
                # On Ray the models run in other processes: the server's RSS says nothing.
                row = {"backend": backend, "batching": batching, **json.loads(lines[-1]),
                       "server_peak_rss_mb": None if on_ray else c.peak_rss_mb(),
                       "server_alive": c.running}
                log(f"{backend} batching {'on ' if batching else 'off'} {users:3d} clients: "
                    f"{row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, failures {row['failures']}")
                rows.append(row)
    return rows
