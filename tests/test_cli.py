"""The `knowcache` CLI, driven as a user would, state in a temporary directory."""

import json
import os
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


@pytest.mark.slow
def test_demo_benches_every_shipped_task(tmp_path):
    """kws, vision and CIFAR-10 (its sample images, on the phone profile), with an
    empty data cache, as on a fresh clone."""
    args = [sys.executable, "-m", "knowcache.cli", "demo", "--out", str(tmp_path / "demo"),
            "--queries", "20"]
    env = {**os.environ, "KNOWCACHE_DATA_DIR": str(tmp_path / "empty-cache")}
    res = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for task in ("kws", "vision", "cifar10"):
        report = json.loads((tmp_path / "demo" / f"{task}-wifi.json").read_text())
        assert report["stream"]["queries"] == 20 and report["identical_queries"]
        assert report["systems"]["two_stage"]["answers"]["failed"] == 0
        for plot in ("latency-cdf", "gate-sweep", "cachenet-warmup"):
            assert (tmp_path / "demo" / f"{task}-wifi-{plot}.png").stat().st_size > 1000
    assert "Reports and plots are in" in res.stdout
    cifar = json.loads((tmp_path / "demo" / "cifar10-wifi.json").read_text())
    assert "samples/cifar10" in cifar["data_source"]
    assert cifar["device"]["profile"]["profile"] == "phone"


def test_overhead_bench_reports_figures(tmp_path):
    if not BENCH.exists():
        pytest.skip("build/host not built (run `make build-cpp`)")
    res = subprocess.run([sys.executable, "-m", "knowcache.bench.overhead_models", "--out",
                          str(tmp_path)],
                         capture_output=True, text=True, check=True)
    pte = Path(res.stdout.strip().splitlines()[-1])
    out = subprocess.run([str(BENCH), str(pte), "--iters", "20", "--rounds", "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bare_us"] > 0 and figures["engine_us"] > 0
    bad = subprocess.run([str(BENCH), str(tmp_path / "absent.pte")], capture_output=True, text=True)
    assert bad.returncode != 0 and "no such file" in bad.stderr


def test_model_commands_are_listed():
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("data", "train", "specialize", "partition", "export", "build-models"):
        assert command in out


def test_bad_data_paths_get_a_clear_error(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["data", "images", "--path", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "dataset-fashion-mnist" in res.output
    res = runner.invoke(main, ["data", "speech", "--speech-commands", str(tmp_path)])
    assert res.exit_code == 1 and "Speech Commands" in res.output
    res = runner.invoke(main, ["data", "speech", "--per-word", "0", "1", "1"])
    assert res.exit_code == 2


def test_export_without_trained_models_says_what_to_run(tmp_path):
    res = CliRunner().invoke(main, ["export", "--task", "kws", "--work", str(tmp_path / "w"),
                                    "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "build-models" in res.output
    assert not (tmp_path / "m").exists()


def test_unknown_cached_class_is_rejected(tmp_path):
    res = CliRunner().invoke(main, ["specialize", "--task", "vision", "--work", str(tmp_path),
                                    "--classes", "bag,hat"])
    assert res.exit_code == 1 and "unknown vision class 'hat'" in res.output


def test_device_infer_checks_its_file_before_the_serial_line(tmp_path):
    res = CliRunner().invoke(main, ["device", "--serial", str(tmp_path / "no-such-tty"), "infer",
                                    str(tmp_path)])
    assert res.exit_code == 1 and "is a folder, not a file; pass the files in it" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_data_add_checks_the_recordings_before_synthesizing(tmp_path, monkeypatch):
    from knowcache.data import store

    def synthesize(*_a, **_k):
        raise AssertionError("synthesized the data set before checking the folder")
    monkeypatch.setattr(store, "add_recordings", synthesize)
    monkeypatch.setenv("KNOWCACHE_DATA_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["data", "speech", "--quick", "--add", str(empty)])
    assert res.exit_code == 1 and "has no <label>/*.wav recordings" in res.output
    (empty / "banana").mkdir()
    res = CliRunner().invoke(main, ["data", "speech", "--quick", "--add", str(empty)])
    assert res.exit_code == 1 and "'banana' is not a label" in res.output


def test_progress_without_a_terminal_prints_plain_lines(capsys):
    from knowcache.commands._progress import progress_bar
    with progress_bar() as update:
        for done in range(0, 101):
            update("synthesizing", done, 100)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "synthesizing: 0/100" and lines[-1] == "synthesizing: 100/100"
    assert len(lines) == 11
