"""Load benchmark of the cloud tier: throughput and p50/p99 latency at several
client counts, with dynamic batching on and off, on loopback.

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


def run(models: Path, task: str, clients: list[int], seconds: float, max_requests: int,
        server_args: list[str], log=print) -> list[dict]:
    rows = []
    for batching in (True, False):
        with cloud(models, ["--batching" if batching else "--no-batching", *server_args]) as c:
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
                row = {"batching": batching, **json.loads(lines[-1]),
                       "server_peak_rss_mb": c.peak_rss_mb(), "server_alive": c.running}
                log(f"batching {'on ' if batching else 'off'} {users:3d} clients: "
                    f"{row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, failures {row['failures']}")
                rows.append(row)
    return rows
