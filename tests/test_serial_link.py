"""Flashing over a serial line, end to end: `knowcache flash` / `knowcache device`
(pyserial) talk to a running `knowcache-device serve-serial` (native, and the
aarch64 build under qemu) through two pseudo-terminals joined by a wire that
can drop and corrupt bytes."""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from knowcache.devicelink import frames
from knowcache.devicelink.client import DeviceClient, DeviceError, flash

REPO = Path(__file__).resolve().parents[1]
NATIVE = REPO / "build/host/runtime_cpp/knowcache-device"
AARCH64 = REPO / "build/aarch64/build/runtime_cpp/knowcache-device"
KWS = REPO / "models/kws"

# Only the tests that start the native device need it (the frame tests do not).
needs_native = pytest.mark.skipif(not NATIVE.exists(), reason="make build-cpp first")


class Wire:
    """Two ptys (device end, host end) joined by a thread that forwards bytes, and
    can drop or corrupt what the host sends."""

    def __init__(self):
        self.fds = []
        self.dev_master, dev_slave = os.openpty()
        self.host_master, host_slave = os.openpty()
        for fd in (dev_slave, host_slave):
            tty.setraw(fd)
        for fd in (self.dev_master, self.host_master):
            os.set_blocking(fd, False)    # a full line drops bytes instead of blocking
        self.fds = [dev_slave, host_slave]   # held open so the masters never see EIO
        self.device_path, self.host_path = os.ttyname(dev_slave), os.ttyname(host_slave)
        self.drop_host_bytes = 0      # host->device bytes still to swallow
        self.corrupt_next = False
        self.forwarded = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        pending = {self.dev_master: bytearray(), self.host_master: bytearray()}
        while self.running:
            writers = [fd for fd, buf in pending.items() if buf]
            ready, writable, _ = select.select([self.dev_master, self.host_master], writers, [],
                                               0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    continue
                if fd == self.host_master:
                    if self.drop_host_bytes:
                        cut = min(self.drop_host_bytes, len(data))
                        self.drop_host_bytes -= cut
                        data = data[cut:]
                    if self.corrupt_next and len(data) > 10:
                        data = data[:5] + bytes([data[5] ^ 0x5A]) + data[6:]
                        self.corrupt_next = False
                    self.forwarded += len(data)
                    target = self.dev_master
                else:
                    target = self.host_master
                if len(pending[target]) < (1 << 20):     # nobody reading: the line drops bytes
                    pending[target] += data
            for fd in writable:
                try:
                    n = os.write(fd, pending[fd])
                except (BlockingIOError, OSError):
                    continue
                del pending[fd][:n]

    def close(self):
        self.running = False
        self.thread.join(2)
        for fd in (*self.fds, self.dev_master, self.host_master):
            os.close(fd)


class Device:
    def __init__(self, binary: Path, port: str, store: Path, *extra: str, qemu: bool = False):
        cmd = [str(binary), "serve-serial", "--port", port, "--store", str(store), *extra]
        if qemu:
            cmd = ["qemu-aarch64", "-cpu", "cortex-a76", "-L", "/", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        assert self.proc.poll() is None, self.proc.stderr.read()

    def kill(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def wire():
    w = Wire()
    yield w
    w.close()


@pytest.fixture
def keyword() -> np.ndarray:
    from knowcache.bench.listen_latency import synth_feed
    from knowcache.listen.vad import VoiceActivityDetector
    audio = synth_feed(("stop",), noise_after=99)
    seg = (VoiceActivityDetector().push(np.concatenate([audio, np.zeros(16000, np.float32)])))[0]
    x = np.zeros(16000, np.float32)
    x[: seg.end - seg.start] = audio[seg.start: seg.end][:16000]
    return x.reshape(1, 16000)


def test_frames_round_trip_and_reject_damage():
    f = frames.Frame(frames.Msg.PUT_CHUNK, 7, bytes(range(256)) * 3 + b"\x00\x00")
    wire = frames.encode(f)
    assert wire.count(b"\x00") == 1 and wire.endswith(b"\x00")
    dec = frames.Decoder()
    assert dec.feed(wire[:10]) == []
    assert dec.feed(wire[10:]) == [f]
    bad = bytearray(wire)
    bad[20] ^= 1
    assert dec.feed(bytes(bad) + wire) == [f] and dec.bad == 1   # resynchronized


def test_frame_parser_survives_a_short_fuzzing_run(tmp_path):
    fuzzer = REPO / "build/fuzz/frame_fuzzer"
    if not fuzzer.exists():
        pytest.skip("make build-fuzz first")
    corpus = tmp_path / "corpus"
    shutil.copytree(REPO / "runtime_cpp/device/fuzz/corpus", corpus)
    # libFuzzer's RSS limit reads getrusage's peak RSS, which Linux carries over
    # from this (pytest) process into the child it execs: after the suite's
    # heavy tests that alone passed the 2 GB default. Give the fuzzer its 2 GB
    # on top of what this process had already used.
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024   # KiB -> MiB
    res = subprocess.run([str(fuzzer), "-runs=40000", "-max_len=4096", "-seed=1",
                          f"-rss_limit_mb={inherited + 2048}", "-malloc_limit_mb=2048",
                          str(corpus)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)   # where libFuzzer writes crash-/oom- artifacts
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 40000 runs" in res.stderr


@needs_native
def test_flash_list_infer_and_stats_over_the_line(wire, tmp_path, keyword):
    dev = Device(NATIVE, wire.device_path, tmp_path / "store")
    try:
        with DeviceClient(wire.host_path) as c:
            hello = c.hello()
            assert hello["program"] == "knowcache-device" and hello["task"] == ""
            result = flash(c, KWS, ["cached"], log=lambda m: None)
            assert result["flashed"] == ["cached"]
            listed = c.list()
            manifest = json.loads((KWS / "manifest.json").read_text())
            cached = next(p for p in manifest["partitions"] if p["id"] == "cached")
            assert listed["task"] == "kws"
            assert listed["partitions"] == [{"id": "cached", "role": "cached", "version": 1,
                                             "bytes": cached["bytes"], "sha256": cached["sha256"]}]
            assert flash(c, KWS, ["cached"], log=lambda m: None)["up_to_date"] == ["cached"]
            answer = c.infer(keyword)
            assert answer["label"] == "stop" and answer["source"] == "local"
            assert c.stats()["engine"]["queries"] == 1
            with pytest.raises(DeviceError, match="no partition 'p9'"):
                c.delete("p9")
    finally:
        dev.kill()
    # the store survives a restart
    files = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert "manifest.json" in files and any(f.startswith("cached-") for f in files)


@needs_native
def test_a_device_that_trusts_a_key_installs_only_signed_uploads(wire, tmp_path, keyword):
    """serve-serial --trusted-key: `knowcache flash` of an unsigned folder is refused
    (nothing installed); the same folder signed by the trusted key is installed,
    vouched for, and answers (docs/security.md)."""
    from knowcache import signing
    key = signing.generate(tmp_path / "keys")
    signed = tmp_path / "signed" / "kws"
    signed.mkdir(parents=True)
    for name in ("manifest.json", "cached.pte"):
        shutil.copy(KWS / name, signed)
    signing.sign_manifest(signed, key.private)
    dev = Device(NATIVE, wire.device_path, tmp_path / "store", "--trusted-key", str(key.public))
    try:
        with DeviceClient(wire.host_path) as c:
            with pytest.raises(DeviceError, match="only installs partitions pinned by a signed") as e:
                flash(c, KWS, ["cached"], log=lambda m: None)
            assert e.value.code == "failed_precondition"
            assert c.list()["partitions"] == []
            assert flash(c, signed, ["cached"], log=lambda m: None)["flashed"] == ["cached"]
            answer = c.infer(keyword)
            assert answer["label"] == "stop" and answer["source"] == "local"
    finally:
        dev.kill()
    store = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert store["partitions"][0]["signed_by"] == key.key_id
    assert store["signed_version"] == json.loads((KWS / "manifest.json").read_text())["version"]


@needs_native
def test_link_faults_are_retried_and_uploads_resume(wire, tmp_path):
    dev = Device(NATIVE, wire.device_path, tmp_path / "store")
    data = (KWS / "p0.pte").read_bytes()
    manifest = json.loads((KWS / "manifest.json").read_text())
    entry = next(p for p in manifest["partitions"] if p["id"] == "p0")
    try:
        with DeviceClient(wire.host_path, timeout_s=0.5) as c:
            c.hello()
            wire.corrupt_next = True                 # one damaged frame: CRC, retry
            assert c.list()["partitions"] == []
            assert c.retried == 1
            done = []

            def cut_mid_upload(sent, total):
                done.append(sent)
                if len(done) == 3:
                    wire.drop_host_bytes = 10 ** 9   # the link goes dead
            with pytest.raises(DeviceError, match="no answer"):
                c.put("kws", manifest["labels"], entry, data, cut_mid_upload)
            wire.drop_host_bytes = 0
            c.retries = 4
            resumed = c.put("kws", manifest["labels"], entry, data)
            assert resumed < len(data)               # the first 3 chunks were not re-sent
            assert c.list()["partitions"][0]["sha256"] == entry["sha256"]
            bad = {**entry, "sha256": "0" * 64}      # a wrong sha256: rejected, old one kept
            with pytest.raises(DeviceError, match="nothing was installed"):
                c.put("kws", manifest["labels"], {**bad, "id": "p0"}, data)
            assert c.list()["partitions"][0]["sha256"] == entry["sha256"]
    finally:
        dev.kill()


@needs_native
def test_full_store_and_a_device_killed_mid_write(wire, tmp_path):
    store = tmp_path / "store"
    data = (KWS / "p1.pte").read_bytes()
    manifest = json.loads((KWS / "manifest.json").read_text())
    entry = next(p for p in manifest["partitions"] if p["id"] == "p1")
    dev = Device(NATIVE, wire.device_path, store, "--store-limit", str(len(data) // 2))
    try:
        with DeviceClient(wire.host_path) as c:
            with pytest.raises(DeviceError, match="store full") as e:
                c.put("kws", manifest["labels"], entry, data)
            assert e.value.code == "store_full"
    finally:
        dev.kill()
    dev = Device(NATIVE, wire.device_path, store)
    with DeviceClient(wire.host_path) as c:
        chunks = []
        with pytest.raises(DeviceError, match=r"no answer to PUT_(CHUNK|COMMIT) after"):
            c.put("kws", manifest["labels"], entry, data,
                  lambda sent, total: chunks.append(sent) or (len(chunks) == 2 and dev.kill()))
    dev = Device(NATIVE, wire.device_path, store)     # restarted on the same store
    try:
        with DeviceClient(wire.host_path) as c:
            assert c.list()["partitions"] == []        # the partial upload is not visible
            sent = c.put("kws", manifest["labels"], entry, data)
            assert sent < len(data)                    # and it resumes
            assert [p["id"] for p in c.list()["partitions"]] == ["p1"]
    finally:
        dev.kill()


@needs_native
def test_cli_flash_and_infer(wire, tmp_path, keyword):
    from knowcache.data import audio
    dev = Device(NATIVE, wire.device_path, tmp_path / "store")
    wav = audio.write_wav(tmp_path / "stop.wav", keyword[0], 16000)
    try:
        run = lambda *a: subprocess.run([sys.executable, "-m", "knowcache.cli", *a],
                                        capture_output=True, text=True, cwd=REPO, timeout=120)
        res = run("flash", "--serial", wire.host_path, "--task", "kws", "--partitions", "cached")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout.splitlines()[-1])["flashed"] == ["cached"]
        res = run("device", "--serial", wire.host_path, "infer", str(wav))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["label"] == "stop"
        res = run("device", "--serial", "/dev/no-such-tty", "list")
        assert res.returncode != 0 and "cannot open /dev/no-such-tty" in res.stderr
    finally:
        dev.kill()


@pytest.mark.slow
def test_aarch64_device_under_qemu_uses_a_flashed_partition(wire, tmp_path, keyword):
    if not AARCH64.exists() or shutil.which("qemu-aarch64") is None:
        pytest.skip("make build-aarch64 first (and make setup for qemu-user)")
    dev = Device(AARCH64, wire.device_path, tmp_path / "store", qemu=True)
    try:
        with DeviceClient(wire.host_path, timeout_s=10) as c:
            assert flash(c, KWS, ["cached"], log=lambda m: None)["flashed"] == ["cached"]
            answer = c.infer(keyword)
            assert answer["label"] == "stop" and answer["partition"] == "cached"
    finally:
        dev.kill()
