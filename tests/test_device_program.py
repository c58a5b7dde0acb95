"""knowcache-device, the runtime as a board program: the native build, and the
aarch64 cross build run under qemu-aarch64, on the shipped models; both must
print the same answers for the same inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NATIVE = REPO / "build/host/runtime_cpp/knowcache-device"
AARCH64 = REPO / "build/aarch64/build/runtime_cpp/knowcache-device"
RATE = 16000
QEMU_CPU = "cortex-a76"


def write_wav(path: Path, x: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Spoken keywords (held-out espeak-ng voices) as WAVs, and Fashion-MNIST test images."""
    from knowcache.bench.listen_latency import synth_feed
    from knowcache.data import images
    from knowcache.listen.vad import VoiceActivityDetector
    d = tmp_path_factory.mktemp("device-inputs")
    # "no" is one the cached model answers with a clear margin in this voice (entropy
    # 0.06 against its 0.56 threshold); "house" is not cached.
    words = ("no", "house", "stop")
    audio = synth_feed(words, noise_after=99)
    vad = VoiceActivityDetector()
    segs = vad.push(audio) + vad.push(np.zeros(RATE, np.float32))
    wavs = [write_wav(d / f"{w}.wav", audio[s.start: s.end]) for w, s in zip(words, segs)]
    test = images.fashion_mnist().test
    raws = []
    for i in range(3):
        p = d / f"image{i}.raw"
        p.write_bytes(test.x[i].astype(np.uint8).tobytes())
        raws.append((p, int(test.y[i])))
    return words, wavs, raws


def run(binary: Path, *args, qemu: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(binary), *map(str, args)]
    if qemu:
        # A Raspberry Pi 5-class core. qemu's default "max" CPU advertises newer int8
        # extensions with which the int8 programs answer wrongly under emulation.
        cmd = ["qemu-aarch64", "-cpu", QEMU_CPU, "-L", "/", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def answers(res: subprocess.CompletedProcess) -> list[dict]:
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads(line) for line in res.stdout.splitlines()]


def needs(binary: Path) -> None:
    if not binary.exists():
        pytest.skip(f"{binary.relative_to(REPO)} not built (make build-cpp / make build-aarch64)")


def test_native_program_classifies_keywords_and_images(inputs):
    needs(NATIVE)
    words, wavs, raws = inputs
    out = answers(run(NATIVE, "run", "--models", "models/kws", "--install", "full", *wavs))
    assert [o["label"] for o in out] == list(words)
    assert all(o["source"] == "local" and o["partition"] == "full" for o in out)
    out = answers(run(NATIVE, "run", "--models", "models/kws", *wavs))   # the cached model
    assert out[0]["label"] == "no" and out[0]["source"] == "local"
    assert out[1]["source"] == "degraded" and "no cloud" in out[1]["degraded_reason"]
    out = answers(run(NATIVE, "run", "--models", "models/vision", "--install", "full",
                      *[p for p, _ in raws]))
    assert sum(o["index"] == y for o, (_, y) in zip(out, raws)) >= 2


def test_native_program_runs_the_staged_model_exit_by_exit(inputs):
    needs(NATIVE)
    words, wavs, raws = inputs
    images = [p for p, _ in raws]
    whole = answers(run(NATIVE, "run", "--models", "models/vision", "--install", "full", *images))
    staged = answers(run(NATIVE, "run", "--models", "models/vision", "--layer-cache",
                         "confidence", *images))
    assert [o["label"] for o in staged] == [o["label"] for o in whole]
    doc = json.loads((REPO / "models/vision/manifest.json").read_text())
    total = next(p for p in doc["partitions"] if p["role"] == "staged")["staged"]["total_flops"]
    for o in staged:
        assert o["partition"] == "staged" and o["source"] == "local"
        assert -1 <= o["exit"] <= 2 and 0 < o["flops"]
        assert (o["exit"] == -1) == (o["flops"] > total)   # the whole model ran, exits included
    res = run(NATIVE, "run", "--models", "models/vision", "--layer-cache", "oracle", wavs[0])
    assert res.returncode == 1 and "learned, confidence, entropy or activation" in res.stderr


def test_native_program_reports_bad_input(inputs, tmp_path):
    needs(NATIVE)
    _, wavs, _ = inputs
    stereo = write_wav(tmp_path / "stereo44k.wav", np.zeros(44100 * 2), rate=44100, channels=2)
    res = run(NATIVE, "run", "--models", "models/kws", stereo, wavs[0])
    assert res.returncode == 1 and "44100 Hz; the model takes 16000 Hz" in res.stderr
    assert "`sox in.wav -r 16000 -c 1 -b 16 out.wav`" in res.stderr
    assert len(res.stdout.splitlines()) == 1          # the good input is still answered
    res = run(NATIVE, "run", "--models", "models/vision", wavs[0])
    assert res.returncode == 1 and "uint8 pixels (784 bytes)" in res.stderr
    res = run(NATIVE, "run", "--models", str(tmp_path), wavs[0])
    assert res.returncode == 1 and "manifest.json" in res.stderr
    res = run(NATIVE, "run", "--models", "models/kws", "--slots", "zero", wavs[0])
    assert res.returncode == 1 and "--slots needs an integer" in res.stderr
    res = run(NATIVE, "run", "--models", "models/kws", tmp_path / "absent.wav")
    assert res.returncode == 1 and "cannot open" in res.stderr
    assert run(NATIVE, "flash").returncode == 1


@pytest.mark.slow
def test_aarch64_program_under_qemu_matches_the_native_build(inputs):
    needs(NATIVE)
    needs(AARCH64)
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-user is not installed (make setup installs it)")
    _, wavs, raws = inputs
    for models, files in (("models/kws", wavs), ("models/vision", [p for p, _ in raws])):
        native = answers(run(NATIVE, "run", "--models", models, *files))
        arm = answers(run(AARCH64, "run", "--models", models, *files, qemu=True))
        assert len(arm) == len(native) == len(files)
        for a, n in zip(arm, native):
            for key in ("input", "label", "index", "source", "partition"):
                assert a[key] == n[key], (key, a, n)
            # int8 kernels round differently on Arm and x86: same answers, close scores
            assert a["confidence"] == pytest.approx(n["confidence"], abs=0.01)
            assert a["entropy"] == pytest.approx(n["entropy"], abs=0.01)
    # A folder among the inputs is reported and skipped there too (it aborted the process).
    res = run(AARCH64, "run", "--models", "models/kws", wavs[0].parent, wavs[0], qemu=True)
    assert res.returncode == 1 and "is a folder, not a file" in res.stderr
    assert len(res.stdout.splitlines()) == 1


@pytest.mark.slow
def test_native_program_falls_back_to_the_cloud(inputs):
    needs(NATIVE)
    from knowcache.bench.cloud_process import cloud
    words, wavs, _ = inputs
    with cloud(REPO / "models") as c:
        out = answers(run(NATIVE, "run", "--models", "models/kws", "--cloud", c.url, *wavs))
    assert [o["label"] for o in out] == list(words)
    assert out[0]["source"] == "local" and out[1]["source"] == "cloud"   # house is not cached
    assert out[1]["network_us"] > 0 and out[1]["hint"]


def test_native_program_uploads_features_instead_of_audio_with_split(inputs):
    """--split always --split-cut 5: the kws word the device does not cache goes to the
    cloud as the staged program's int8 activation (17 embeddings + branch features), not
    as 64,000 bytes of audio, and gets the same answer."""
    needs(NATIVE)
    from knowcache.bench.cloud_process import cloud
    words, wavs, _ = inputs
    with cloud(REPO / "models") as c:
        out = answers(run(NATIVE, "run", "--models", "models/kws", "--cloud", c.url,
                          "--split", "always", "--split-cut", "5", *wavs))
    assert [o["label"] for o in out] == list(words)
    assert out[1]["source"] == "cloud" and out[1]["uplink"] == "features"
    assert 0 < out[1]["uplink_bytes"] < 16000 * 4 // 10
    assert "uplink" not in out[0]                                    # answered on the device
    res = run(NATIVE, "run", "--models", "models/kws", "--split", "always", wavs[0])
    assert res.returncode != 0 and "needs a cut stage >= 1" in res.stderr
    res = run(NATIVE, "run", "--models", "models/kws", "--split", "sometimes", wavs[0])
    assert res.returncode != 0 and "'sometimes' is not one of off, auto, always" in res.stderr


def test_native_program_skips_a_folder_or_a_damaged_wav_and_answers_the_rest(inputs, tmp_path):
    needs(NATIVE)
    _, wavs, raws = inputs
    truncated = tmp_path / "truncated.wav"
    data = wavs[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])     # the header still promises it all
    mulaw = tmp_path / "mulaw.wav"
    mulaw.write_bytes(data[:20] + (7).to_bytes(2, "little") + data[22:])
    res = run(NATIVE, "run", "--models", "models/kws", tmp_path, truncated, mulaw, wavs[0])
    assert res.returncode == 1, res.stderr                     # no abort (was SIGABRT)
    assert len(answers_of(res)) == 1 and answers_of(res)[0]["input"] == str(wavs[0])
    assert f"{tmp_path}: is a folder, not a file; pass the files in it" in res.stderr
    assert "bytes of audio but the file holds" in res.stderr and "cut short" in res.stderr
    assert "format 7, which knowcache-device does not read" in res.stderr
    nan = tmp_path / "nan.raw"
    pixels = np.zeros(784, "<f4")
    pixels[10] = np.nan
    nan.write_bytes(pixels.tobytes())
    res = run(NATIVE, "run", "--models", "models/vision", nan, raws[0][0])
    assert res.returncode == 1 and "NaN or infinite values (first at element 10)" in res.stderr
    assert len(answers_of(res)) == 1


def answers_of(res: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_native_program_help_prints_usage():
    needs(NATIVE)
    for args in (("run", "--help"), ("serve-serial", "--help"), ("--help",)):
        res = run(NATIVE, *args)
        assert res.returncode == 0 and res.stdout.startswith("usage: knowcache-device run"), args
        assert "loudest second" in res.stdout


def test_native_program_reads_any_width_and_channels_and_windows_long_clips_like_the_host(
        inputs, tmp_path):
    """A word inside 3 s, as 8, 24-bit and stereo takes: the device program cuts the same
    loudest second as `knowcache infer` and gives the 16-bit clip's answer."""
    needs(NATIVE)
    from knowcache.data import audio
    from knowcache.infer import Classifier
    from test_inputs import wav_bytes
    words, wavs, _ = inputs
    x, _ = audio.read_wav(wavs[0])
    long = np.concatenate([np.zeros(RATE), x, np.zeros(int(1.5 * RATE))]).astype(np.float32)
    takes = {"long16.wav": wav_bytes(long), "long24.wav": wav_bytes(long, bits=24),
             "long8.wav": wav_bytes(long, bits=8), "stereo.wav": wav_bytes(long, channels=2),
             "float.wav": wav_bytes(long, bits=32, tag=3)}
    files = []
    for name, data in takes.items():
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    res = run(NATIVE, "run", "--models", "models/kws", "--install", "full", wavs[0], *files)
    out = answers(res)
    assert [o["label"] for o in out] == [words[0]] * (1 + len(files))
    assert res.stderr.count("classified its loudest 1 s") == len(files)
    assert "executorch" not in res.stderr and "cpuinfo" not in res.stderr   # INFO lines muted
    host = Classifier(models=REPO / "models/kws", model="full")
    for o, f in zip(out[1:], files):
        mine = host.classify(f)
        assert mine.label == o["label"] and mine.notice.split(": ", 1)[1] in res.stderr
        assert mine.confidence == pytest.approx(o["confidence"], abs=0.02)


def test_serve_serial_refuses_what_is_not_a_serial_line(tmp_path):
    needs(NATIVE)
    plain = tmp_path / "plain-file"
    plain.write_bytes(b"")
    for port in (plain, "/dev/null"):
        res = run(NATIVE, "serve-serial", "--port", port, "--store", tmp_path / "store")
        assert res.returncode == 1 and "is not a serial line" in res.stderr, res.stderr


def test_native_program_keeps_private_classes_and_local_only_answers_on_the_device(
        inputs, tmp_path, closed_port_url):
    """Trousers private; --local-only: nothing is sent anywhere, and the JSON says why."""
    needs(NATIVE)
    import shutil

    from knowcache import manifest
    _, _, raws = inputs  # an ankle boot ("other" for the cached model), a pullover, trousers
    shipped = manifest.load(REPO / "models/vision")
    device = tmp_path / "vision"
    device.mkdir()
    shutil.copy(REPO / "models/vision/cached.pte", device)
    manifest.write(device, shipped.task, shipped.labels, shipped.entries(),
                   private_labels=["trouser"])
    images = [p for p, _ in raws]
    out = answers(run(NATIVE, "run", "--models", device, "--cloud", closed_port_url,
                      "--local-only", *images))
    assert out[0]["source"] == "local_only" and "local-only" in out[0]["kept_reason"]
    assert "private" not in out[0]
    assert out[2]["label"] == "trouser" and out[2]["private"] is True
    res = run(NATIVE, "run", "--models", device, "--private-share", "2", *images)
    assert res.returncode != 0 and "--private-share needs a number in [0, 1]" in res.stderr
