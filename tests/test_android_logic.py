"""The Android app's platform-free logic (android_app/logic, plain Java) against
`knowcache listen`'s Python: the Java voice-activity detector must find the same
utterances as host_tools/knowcache/listen/vad.py on the same recordings (spoken
keywords with a noise burst, real Speech Commands recordings, noise alone), cut
the same 1 s windows, and print the same lines. Run on the host JVM with JUnit 5
(`make build-java` compiles the classes)."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from knowcache.data import audio

REPO = Path(__file__).resolve().parents[1]
CLASSES = REPO / "build/java/classes"
TEST_CLASSES = REPO / "build/java/test-classes"
JUNIT = Path("/usr/share/java/junit-platform-console-standalone.jar")
REAL = REPO.parent / "shared" / "real-voices" / "speech-commands"
RATE = 16000
BLOCK = 800


def real_recordings(rng) -> np.ndarray:
    """Eight real Speech Commands clips, 0.6 s of faint noise between them."""
    words = ("yes", "no", "up", "down", "left", "right", "stop", "go")
    parts = [rng.normal(0, 1e-3, RATE // 2)]
    for w in words:
        clip = sorted((REAL / w).glob("*.wav"))[3]
        x, rate = audio.read_wav(clip)
        assert rate == RATE, clip
        parts += [x, rng.normal(0, 1e-3, int(0.6 * RATE))]
    return np.concatenate(parts).astype(np.float32)


def noise_alone(rng) -> np.ndarray:
    from knowcache.data import audio as sounds
    parts = [np.zeros(RATE // 2)]
    for kind, level in (("white", 0.05), ("pink", 0.1), ("brown", 0.1), ("hum", 0.2)):
        parts += [sounds.noise(kind, 3 * RATE, RATE, rng) * level, np.zeros(RATE // 2)]
    return np.concatenate(parts).astype(np.float32)


def streams() -> dict[str, np.ndarray]:
    from knowcache.bench.listen_latency import synth_feed
    rng = np.random.default_rng(0)
    out = {"spoken-with-noise-burst": synth_feed(), "noise-alone": noise_alone(rng)}
    if REAL.is_dir():
        out["real-speech-commands"] = real_recordings(rng)
    elif os.environ.get("CI"):   # as tests/test_real_voices.py: CI has the recordings
        pytest.fail(f"{REAL} is missing in CI")
    return out


def python_side(fx: Path) -> tuple[list, list, int]:
    """Runs the Python detector the way the recognizer does; writes the streams and
    windows; returns the streams.tsv and segments.tsv rows and the utterance count."""
    from knowcache.listen.recognizer import Ring, window_for
    from knowcache.listen.vad import VoiceActivityDetector
    stream_rows, segment_rows = [], []
    for name, x in streams().items():
        x = np.concatenate([x, np.zeros(RATE, np.float32)])  # the end of the last word
        (fx / f"{name}.f32").write_bytes(x.astype("<f4").tobytes())
        vad, ring, found = VoiceActivityDetector(), Ring(), 0
        for i in range(0, len(x), BLOCK):
            ring.write(x[i:i + BLOCK])
            for seg in vad.push(x[i:i + BLOCK]):
                start = window_for(seg)
                (fx / f"{name}-window{found}.f32").write_bytes(
                    ring.read(start, RATE).astype("<f4").tobytes())
                segment_rows.append((name, seg.start, seg.end, repr(seg.level_db), start))
                found += 1
        stream_rows.append((name, vad.dropped))
    return stream_rows, segment_rows, len(segment_rows)


def listen_lines() -> list[tuple]:
    """What `knowcache listen` prints for a few results (commands/listen.py's format)."""
    rows = []
    for word, conf, source, lat in (("yes", 0.9713, "local", 12.2), ("house", 0.4412, "cloud",
                                    143.7), ("_unknown_", 1.0, "degraded", 1503.1),
                                   ("no", 0.05, "local", 3.3)):
        conf = float(np.float32(conf))
        rows.append((word, repr(conf), source, repr(lat),
                     f"{word:<10} {conf:6.1%}  {source:<8} {lat:6.0f} ms"))
    return rows


def write_tsv(path: Path, rows) -> None:
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))


def test_java_listening_logic_matches_knowcache_listen(tmp_path):
    missing = [p for p in (CLASSES, TEST_CLASSES, JUNIT) if not p.exists()]
    assert not missing, f"{missing} missing: run `make build-java` (make test does)"
    fx = tmp_path / "fixtures"
    fx.mkdir()
    stream_rows, segment_rows, utterances = python_side(fx)
    assert utterances >= 6, segment_rows   # the recordings do hold words
    write_tsv(fx / "streams.tsv", stream_rows)
    write_tsv(fx / "segments.tsv", segment_rows)
    write_tsv(fx / "lines.tsv", listen_lines())
    cmd = ["java", f"-Dknowcache.fixtures={fx}", "-jar", str(JUNIT), "--class-path",
           f"{CLASSES}:{TEST_CLASSES}", "--select-package", "org.knowcache.logic",
           "--reports-dir", str(fx / "reports"), "--disable-banner", "--details=tree",
           "--fail-if-no-tests"]
    res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    suites = ET.parse(fx / "reports" / "TEST-junit-jupiter.xml").getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    assert int(suite.get("tests")) == len(stream_rows) + 4 + 3   # + ImageInputTest
    assert int(suite.get("failures")) == int(suite.get("errors")) == 0
