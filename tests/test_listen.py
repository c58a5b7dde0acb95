"""`knowcache listen` through the real audio stack: PortAudio (sounddevice) on
ALSA, whose capture device is ALSA's `file` plugin reading a raw PCM file, so
the command records from it exactly as from a microphone. Plus the voice
activity detector, resampler and recordings on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from knowcache.bench.listen_latency import synth_feed
from knowcache.listen.microphone import StreamResampler
from knowcache.listen.recognizer import Ring
from knowcache.listen.vad import VoiceActivityDetector

REPO = Path(__file__).resolve().parents[1]
KWS = REPO / "models" / "kws"
WORDS = ("yes", "house", "stop", "seven")
RATE = 16000


@pytest.fixture(scope="module")
def feed() -> np.ndarray:
    return synth_feed(WORDS)


def alsa_home(tmp: Path, audio: np.ndarray | None) -> dict:
    """An environment whose ~/.asoundrc defines the capture device `knowcache_file`."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    if audio is not None:
        raw = tmp / "mic.raw"
        (np.clip(audio, -1, 1) * 32767).astype("<i2").tofile(raw)
        (home / ".asoundrc").write_text(
            'pcm.knowcache_file {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
            f'  infile "{raw}"\n  format "raw"\n}}\n')
    return {**os.environ, "HOME": str(home), "KNOWCACHE_LOG": "error"}


def listen(env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "knowcache.cli", "listen", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def test_words_are_printed_in_order_and_noise_triggers_nothing(tmp_path, feed):
    env = alsa_home(tmp_path, feed)
    res = listen(env, "--device", "knowcache_file", "--models", str(KWS), "--model", "full",
                 "--duration", f"{len(feed) / RATE:.3f}", "--json", "--record",
                 str(tmp_path / "rec"))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    heard = [l for l in lines if "word" in l]
    assert [h["word"] for h in heard] == list(WORDS)
    assert all(h["source"] == "local" for h in heard)
    summary = lines[-1]["summary"]
    assert summary["utterances"] == 4 and summary["dropped_as_noise"] >= 1
    wavs = sorted((tmp_path / "rec").glob("*.wav"))
    assert len(wavs) == 4
    assert {w.stem.split("_", 1)[1] for w in wavs} == set(WORDS)
    with wave.open(str(wavs[0])) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getnframes() > 1600


@pytest.mark.slow
def test_two_stage_sends_uncached_words_to_the_cloud(tmp_path, feed):
    from knowcache.bench.cloud_process import cloud
    env = alsa_home(tmp_path, feed)
    with cloud(REPO / "models") as c:
        res = listen(env, "--device", "knowcache_file", "--models", str(KWS), "--cloud", c.url,
                     "--duration", f"{len(feed) / RATE:.3f}")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [l.split() for l in res.stdout.splitlines() if l.strip()]
    assert [r[0] for r in rows] == list(WORDS)
    sources = {r[0]: r[2] for r in rows}
    assert sources["house"] == "cloud" and sources["seven"] == "cloud"   # not cached
    assert "real-time factor" in res.stderr


def test_silence_and_steady_noise_alone_print_nothing(tmp_path):
    from knowcache.data import audio as sounds
    rng = np.random.default_rng(1)
    parts = [np.zeros(RATE)]
    for kind, level in (("white", 0.05), ("pink", 0.1), ("brown", 0.1), ("hum", 0.2)):
        parts += [sounds.noise(kind, 3 * RATE, RATE, rng) * level, np.zeros(RATE // 2)]
    audio = np.concatenate(parts).astype(np.float32)
    env = alsa_home(tmp_path, audio)
    res = listen(env, "--device", "knowcache_file", "--models", str(KWS), "--model", "full",
                 "--duration", f"{len(audio) / RATE:.3f}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == ""
    assert "0 commands" in res.stderr
    vad = VoiceActivityDetector()            # the detector itself fires on none of them
    assert sum((vad.push(audio[i:i + 800]) for i in range(0, len(audio), 800)), []) == []
    assert vad.dropped == 4                  # each noise switching on, then ignored


def test_missing_or_unknown_device_lists_what_there_is(tmp_path, feed):
    env = alsa_home(tmp_path, feed)
    res = listen(env, "--list-devices")
    assert res.returncode == 0 and "knowcache_file" in res.stdout
    res = listen(env, "--device", "no-such-mic")
    assert res.returncode != 0
    assert "no input device matches 'no-such-mic'" in res.stderr and "knowcache_file" in res.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    res = listen(alsa_home(bare, None))       # no ~/.asoundrc: no capture device at all
    assert res.returncode != 0 and "no audio input devices" in res.stderr


def test_vad_finds_each_word_once(feed):
    vad = VoiceActivityDetector()
    segments = []
    for i in range(0, len(feed), 800):
        segments += vad.push(feed[i:i + 800])
    segments += vad.push(np.zeros(RATE, np.float32))
    assert len(segments) == len(WORDS)
    assert all(0.1 < (s.end - s.start) / RATE < 1.5 for s in segments)
    assert vad.dropped == 1          # the 2 s noise burst


def test_stream_resampler_matches_one_shot_resampling():
    from scipy.signal import resample_poly
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    r = StreamResampler(44100)
    y = np.concatenate([r(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    ref = resample_poly(x, r.up, r.down)
    assert len(y) > 15000 and np.allclose(y, ref[:len(y)], atol=1e-5)


def test_ring_reads_by_absolute_position():
    ring = Ring(seconds=0.001)      # 16 samples
    ring.write(np.arange(10, dtype=np.float32))
    ring.write(np.arange(10, 20, dtype=np.float32))
    assert ring.read(4, 4).tolist() == [4, 5, 6, 7]
    assert ring.read(2, 4).tolist() == [0, 0, 4, 5]     # 2 and 3 have been overwritten
    assert ring.read(18, 4).tolist() == [18, 19, 0, 0]  # 20 and 21 not yet recorded


def test_recordings_fold_into_training_once(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from knowcache.cli import main
    monkeypatch.setenv("KNOWCACHE_DATA_DIR", str(tmp_path / "cache"))
    rec = tmp_path / "rec"
    (rec / "yes").mkdir(parents=True)
    for i in range(3):
        with wave.open(str(rec / "yes" / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(48000)
            w.writeframes((np.sin(np.arange(24000 + i) / 9) * 8000).astype("<i2").tobytes())
    args = ["data", "speech", "--per-word", "1", "1", "1", "--add", str(rec)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "added 3 new recordings" in res.output
    from knowcache.data import store
    ds = store.speech(per_word=(1, 1, 1))
    assert len(ds.train) == 36 + 3 and ds.train.x.shape[1] == RATE
    assert (ds.train.group == "user:rec").sum() == 3
    assert "added 0 new recordings" in CliRunner().invoke(main, args).output
    (rec / "yess").mkdir()
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "'yess' is not a label" in res.output
