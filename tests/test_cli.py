"""The `knowcache` CLI, driven as a user would, state in a temporary directory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from knowcache.cli import main

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "build/host/runtime_cpp/knowcache_overhead_bench"


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("knowcache, version")
    assert "demo" in runner.invoke(main, ["--help"]).output


def test_demo_runs_the_runtime_end_to_end(tmp_path):
    args = [sys.executable, "-m", "knowcache.cli", "demo", "--out", str(tmp_path)]
    if BENCH.exists():
        args += ["--bench-binary", str(BENCH)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "answered locally" in res.stdout
    manifest = json.loads((tmp_path / "models/toy/manifest.json").read_text())
    assert {p["id"] for p in manifest["partitions"]} == {"full", "cached"}
    if BENCH.exists():
        assert "Engine::Infer (local)" in res.stdout


def test_overhead_bench_reports_figures(tmp_path):
    if not BENCH.exists():
        pytest.skip("build/host not built (run `make build-cpp`)")
    res = subprocess.run([sys.executable, "-m", "knowcache.bench_models", "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    pte = Path(res.stdout.strip().splitlines()[-1])
    out = subprocess.run([str(BENCH), str(pte), "--iters", "20", "--rounds", "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bare_us"] > 0 and figures["engine_us"] > 0
    bad = subprocess.run([str(BENCH), str(tmp_path / "absent.pte")], capture_output=True, text=True)
    assert bad.returncode != 0 and "no such file" in bad.stderr
