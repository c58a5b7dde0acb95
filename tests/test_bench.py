"""`knowcache bench`: the link emulator, the query streams, and the harness end to
end on a tiny stream over the --quick toy models (real `knowcache serve`
processes, the C++ runtime, the relay)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from knowcache.bench import link, streams
from knowcache.tasks import VISION

SYSTEM_FIELDS = {"accuracy", "fidelity", "local_rate", "latency_ms", "uplink_bytes_per_query",
                 "downloads", "model_bytes"}


@pytest.fixture
def echo_server():
    """A TCP echo server on loopback; yields its URL."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


def _connect(url: str) -> socket.socket:
    host, port = url.split("://")[1].split(":")
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exactly(s: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        assert chunk, "relay closed the connection early"
        got += len(chunk)


def test_relay_adds_the_configured_round_trip_and_paces_bandwidth(echo_server):
    profile = link.LinkProfile("test", rtt_ms=60, bandwidth_mbps=8, jitter_ms=0)
    with link.relay_process(profile, echo_server) as url, _connect(url) as s:
        rtts = []
        for _ in range(8):
            t0 = time.perf_counter()
            s.sendall(b"x" * 10)
            _recv_exactly(s, 10)
            rtts.append((time.perf_counter() - t0) * 1e3)
        assert 58 <= float(np.median(rtts)) <= 80, rtts
        # 100 kB each way at 8 Mbit/s: >= 100 ms of serialization plus the RTT.
        t0 = time.perf_counter()
        s.sendall(b"y" * 100_000)
        _recv_exactly(s, 100_000)
        bulk_ms = (time.perf_counter() - t0) * 1e3
        assert 100 + 60 <= bulk_ms <= 500, bulk_ms


def test_relay_without_cloud_closes_the_connection():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with link.relay_process(link.PROFILES["wifi"], dead) as url, _connect(url) as s:
        s.settimeout(5)
        s.sendall(b"hello")
        # Closed, not left hanging (a timeout would raise): an orderly close, or a reset
        # when the relay closes before reading "hello" (the kernel then answers RST).
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass


def test_link_profiles_and_bad_values():
    assert link.PROFILES["wifi"].rtt_ms == 20 and link.PROFILES["wifi"].bandwidth_mbps == 50
    assert link.PROFILES["lte"].rtt_ms == 60 and link.PROFILES["lte"].bandwidth_mbps == 10
    assert link.profile("lte", rtt_ms=5).rtt_ms == 5
    with pytest.raises(ValueError, match="bandwidth"):
        link.profile("wifi", bandwidth_mbps=0)
    with pytest.raises(ValueError, match="unknown link profile"):
        link.profile("5g")


def test_streams_are_seeded_zipf_and_bursty():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 5000)
    labels = VISION.labels

    def make(**kw):
        return streams.build(y, labels, VISION.popularity, streams.StreamConfig(**kw))
    a, b = make(queries=4000, seed=1), make(queries=4000, seed=1)
    assert np.array_equal(a.sample, b.sample)
    assert not np.array_equal(a.sample, make(queries=4000, seed=2).sample)
    assert np.array_equal(y[a.sample], a.label)       # each query is a sample of its class
    top = labels.index(VISION.popularity[0])
    expected = streams.zipf_weights(10, 1.0)[0]
    assert abs(np.mean(a.label == top) - expected) < 0.05
    bursty = make(queries=4000, seed=1, repeat=0.8)
    assert bursty.describe()["mean_burst"] > 2 * a.describe()["mean_burst"]
    uniform = make(queries=4000, zipf=0.0)
    assert abs(np.mean(uniform.label == top) - 0.1) < 0.03
    with pytest.raises(ValueError, match="repeat"):
        streams.StreamConfig(repeat=1.0)


def _bench(models_root, tmp_path, *extra, queries=40):
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "knowcache.cli", "bench", "--task", "vision", "--models",
           str(models_root), "--queries", str(queries), "--rtt-ms", "4", "--json", str(out),
           *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    return json.loads(out.read_text()), res.stdout


@pytest.mark.slow
def test_bench_report_has_every_field_and_systems_see_identical_queries(quick_vision_build,
                                                                          tmp_path):
    models_root = quick_vision_build[0].parent
    report, stdout = _bench(models_root, tmp_path, "--plots", str(tmp_path / "plots"))
    assert {"task", "stream", "link", "systems"} <= set(report)
    assert report["task"] == "vision"
    assert {"profile", "rtt_ms", "bandwidth_mbps"} <= set(report["link"])
    assert report["link"]["rtt_ms"] == 4 and report["link"]["profile"] == "wifi"
    assert report["stream"]["queries"] == 40 and report["stream"]["repeat"] == 0.8
    assert set(report["systems"]) == {"cloud_only", "device_only", "two_stage", "cachenet",
                                      "device_full", "generic_gate"}
    for name, s in report["systems"].items():
        assert SYSTEM_FIELDS <= set(s), name
        assert set(s["latency_ms"]) == {"mean", "p50", "p95", "p99"}
        assert s["answers"]["failed"] == 0 and sum(s["answers"].values()) == 40
        # The local rate as the per-query trace shows it.
        local = np.array(report["traces"][name]["source"]) == "local"
        assert s["local_rate"] == pytest.approx(local.mean()) == s["answers"]["local"] / 40
    assert report["identical_queries"] is True
    # The same 40 queries, rebuilt here, through the full program run directly: the
    # accuracy of the two systems that answer with it.
    from knowcache.bench import workload
    from knowcache.runtime import Partition
    stream, x, _ = workload.load("vision", quick=False, queries=40, seed=0)
    full = Partition.from_file(str(models_root / "vision" / "full.pte"))
    right = [int(np.argmax(full.run(x[i][None]))) == int(label)
             for i, label in zip(stream.sample, stream.label)]
    for name in ("cloud_only", "device_full"):
        assert report["systems"][name]["accuracy"] == pytest.approx(np.mean(right)), name
    sys_ = report["systems"]
    assert sys_["cloud_only"]["local_rate"] == 0 and sys_["device_only"]["local_rate"] == 1
    assert sys_["cloud_only"]["uplink_bytes_per_query"] == 28 * 28 * 4
    assert sys_["cloud_only"]["model_bytes"] == 0
    assert sys_["device_full"]["model_bytes"] > sys_["device_only"]["model_bytes"] > 0
    assert sys_["cloud_only"]["fidelity"] == pytest.approx(1.0)
    # the emulated RTT is a floor for every cloud answer
    assert min(report["traces"]["cloud_only"]["latency_ms"]) >= 4
    assert sys_["cachenet"]["downloads"] >= 1        # cold cache: the hints were followed
    sweep = report["sweep"]["cached"]
    assert len(sweep["accuracy"]) == len(sweep["thresholds"]) == len(sweep["local_rate"])
    assert sweep["local_rate"][0] <= sweep["local_rate"][-1]
    assert set(report["targets"]) == {"two_stage", "cachenet", "generic_gate"}
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["vision-wifi-cachenet-warmup.png", "vision-wifi-gate-sweep.png",
                     "vision-wifi-latency-cdf.png"]
    assert "two_stage" in stdout and "targets" in stdout


@pytest.mark.slow
def test_cloud_stopped_mid_run_leaves_every_query_answered(quick_vision_build, tmp_path):
    models_root = quick_vision_build[0].parent
    report, stdout = _bench(models_root, tmp_path, "--systems", "cloud_only,two_stage,cachenet",
                            "--cloud-stop-at", "20")
    systems = report["systems"]
    assert report["device"]["cloud_stop_at"] == 20
    for name in ("two_stage", "cachenet"):
        answers = systems[name]["answers"]
        assert sum(answers.values()) == 40
        assert answers["failed"] == 0, (name, systems[name]["errors"])
        src = report["traces"][name]["source"]
        assert set(src[:20]) <= {"local", "cloud"}
        assert set(src[20:]) <= {"local", "degraded"}      # the local answer, flagged
        assert answers["degraded"] == src.count("degraded")
    assert systems["two_stage"]["answers"]["degraded"] > 0
    assert "degraded" in stdout
    # a device with no model cannot answer without its cloud: counted, not hidden
    assert systems["cloud_only"]["answers"]["failed"] == 20
    assert systems["cloud_only"]["errors"]


def test_cli_lists_the_harness_systems():
    from knowcache.bench.systems import LAYER_CACHE_SYSTEMS, SPLIT_SYSTEMS, SYSTEMS
    from knowcache.commands.bench import LAYER_CACHE_NAMES, SPLIT_NAMES, SYSTEM_NAMES
    assert SYSTEM_NAMES == SYSTEMS
    assert LAYER_CACHE_NAMES == LAYER_CACHE_SYSTEMS
    assert SPLIT_NAMES == SPLIT_SYSTEMS


def test_bench_rejects_bad_input(tmp_path):
    from click.testing import CliRunner

    from knowcache.cli import main
    runner = CliRunner()
    res = runner.invoke(main, ["bench", "--task", "vision", "--models", str(tmp_path)])
    assert res.exit_code != 0 and "manifest.json missing" in res.output
    res = runner.invoke(main, ["bench", "--task", "vision", "--systems", "cloud_only,edge"])
    assert res.exit_code != 0 and "unknown systems" in res.output
    res = runner.invoke(main, ["bench", "--task", "vision", "--repeat", "1.5"])
    assert res.exit_code != 0


def _system(acc: float, mean_ms: float, n: int) -> dict:
    return {"accuracy": acc, "latency_ms": {"mean": mean_ms},
            "answers": {"local": n, "cloud": 0, "degraded": 0, "failed": 0}}


def test_small_runs_get_no_target_verdict_and_every_gap_its_interval():
    from rich.console import Console

    from knowcache.bench import harness, report as reports
    for n, verdict in ((30, False), (500, True)):
        systems = {"cloud_only": _system(0.90, 40.0, n), "device_only": _system(0.80, 2.0, n),
                   "two_stage": _system(0.90, 8.0, n)}
        row = harness.targets(systems)["two_stage"]
        lo, hi = row["accuracy_gap_to_cloud_ci95"]
        assert lo < 0 < hi and (hi - lo) * 100 == pytest.approx(
            2 * 196 * np.sqrt(2 * 0.09 / n), rel=1e-6)
        console = Console(record=True, width=200)
        console.print(reports.targets_table({"targets": {"two_stage": row}}))
        text = console.export_text()
        assert "[lo, hi]: 95% interval" in text
        if verdict:
            assert row["latency_met"] is True and "withheld" not in row and "met" in text
            assert "+0.0 pt [-4, +4] (>= -0.5) met (within noise)" in text
        else:
            assert row["latency_met"] is None and row["accuracy_met"] is None
            assert "no verdict" in text and "30 queries, fewer than the 200" in text
            assert "met" not in text.replace("no verdict", "")


def test_every_system_gets_a_legend_line():
    from knowcache.bench import report as reports
    from knowcache.bench.systems import ALL_SYSTEMS
    lines = reports.legend_lines({"systems": dict.fromkeys(ALL_SYSTEMS, {}),
                                  "skipped": {}})
    assert len(lines) == len(ALL_SYSTEMS)
    for name, line in zip(ALL_SYSTEMS, lines):
        assert line.startswith(name) and len(line.split(None, 1)[1]) > 20, line


def test_warm_up_curve_starts_cold_at_each_change_of_scene():
    from knowcache.bench.report import scene_changes, warmup_curve
    partition = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    changes = scene_changes(partition)
    assert changes.tolist() == [0, 4, 7]
    # Each scene misses its first query (the partition is not cached yet), then hits.
    local = np.array([False, True, True, True, False, True, True, False, True, True, True, True])
    curve, counts = warmup_curve(local, changes, horizon=6)
    assert curve.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert counts.tolist() == [3, 3, 3, 2, 1]          # shorter scenes stop contributing


def test_cachenet_latency_target_needs_both_cloud_and_device_full_ratios():
    from knowcache.bench import harness
    n = 500
    base = {"cloud_only": _system(0.90, 40.0, n), "device_only": _system(0.80, 2.0, n),
            "cachenet": _system(0.895, 16.0, n)}
    fast_full = harness.targets({**base, "device_full": _system(0.90, 30.0, n)})["cachenet"]
    slow_full = harness.targets({**base, "device_full": _system(0.90, 80.0, n)})["cachenet"]
    assert fast_full["latency_ratio"] == pytest.approx(0.4)          # <= 1/2 of cloud_only
    assert fast_full["latency_ratio_device_full"] == pytest.approx(16 / 30)
    assert fast_full["latency_met"] is False                         # > 1/4 of device_full
    assert slow_full["latency_met"] is True and slow_full["accuracy_met"] is True
    assert slow_full["device_margin_met"] is True
    two = harness.targets({**base, "two_stage": _system(0.893, 12.0, n)})["two_stage"]
    assert two["accuracy_met"] is False                              # 0.7 pt: over 0.5
    # Exactly at the bound is met, whatever the float subtraction rounds to.
    at = harness.targets({"cloud_only": _system(0.972, 40.0, 1000),
                          "two_stage": _system(0.967, 12.0, 1000)})["two_stage"]
    assert 0.967 - 0.972 < -0.005 and at["accuracy_met"] is True
    assert "device_margin_met" not in two


def test_layer_caching_is_judged_against_its_tasks_goals():
    """CIFAR-10 against automated layer caching's CIFAR-10 figures (58% / 46%),
    other tasks against 50% / 40%; the report's title names the goals used."""
    from rich.console import Console

    from knowcache.bench import harness, report as reports
    systems = {"layer_cache": {"flops_saved": 0.55, "latency_saved": 0.43, "fidelity": 0.996}}
    other = harness.layer_cache_targets(systems, "vision")["layer_cache"]
    cifar = harness.layer_cache_targets(systems, "cifar10")["layer_cache"]
    assert other["flops_met"] and other["latency_met"] and other["fidelity_met"]
    assert not cifar["flops_met"] and not cifar["latency_met"] and cifar["fidelity_met"]
    console = Console(record=True, width=250)
    console.print(reports.layer_cache_table({
        "task": "cifar10", "layer_cache_targets": {"layer_cache": cifar},
        "systems": {"layer_cache": {**systems["layer_cache"], "flops_per_query": 1e8,
                                    "accuracy": 0.9, "lookup_us_per_query": 50.0,
                                    "exit_histogram": {"exit_0": 3, "whole_model": 7}}}}))
    text = " ".join(console.export_text().split())
    assert ">= 58% fewer FLOPs, >= 46% lower latency" in text and "55% missed" in text
