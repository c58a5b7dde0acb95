"""`knowcache bench-serve` runs locust against real servers and reports figures
(no speed assertions: figures are for people, the machines are shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_serve_reports_both_modes(tmp_path):
    out = tmp_path / "load.json"
    res = subprocess.run([sys.executable, "-m", "knowcache.cli", "bench-serve", "--clients", "2",
                          "--seconds", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["batching"] for r in rows] == [True, False]
    for r in rows:
        assert r["users"] == 2 and r["requests"] > 0 and r["failures"] == 0
        assert r["throughput_rps"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
    assert "batching gives" in res.stdout


def test_bench_serve_rejects_bad_client_counts_and_a_task_the_models_lack(tmp_path):
    res = subprocess.run([sys.executable, "-m", "knowcache.cli", "bench-serve", "--clients",
                          "a,b"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "comma-separated" in res.stderr
    (tmp_path / "kws").symlink_to(REPO / "models" / "kws", target_is_directory=True)
    res = subprocess.run([sys.executable, "-m", "knowcache.cli", "bench-serve", "--task",
                          "vision", "--models", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert f"{tmp_path} has no vision/manifest.json; its tasks: kws" in res.stderr
