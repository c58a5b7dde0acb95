"""A short pass of every fuzzer `make fuzz` runs for longer: libFuzzer (+ASan,
UBSan) on the manifest parser, the device's WAV reader and the serial session's
request dispatch (the serial frame parser's pass is in test_serial_link.py), and atheris on the Python parsers
(scripts/fuzz_python.py). Each starts from its seed corpus; a crash, a sanitizer
report or an exception a parser does not document fails the test with the input."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "build" / "fuzz"


def _rss_limit_mb() -> int:
    # libFuzzer's RSS limit reads the peak RSS Linux carries into the exec'd child
    # (see test_serial_link.py): give it 2 GB on top of this process's.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 2048


@pytest.mark.parametrize("fuzzer, seeds, runs, max_len", [
    ("manifest_fuzzer", "runtime_cpp/fuzz/corpus_manifest", 20000, 16384),
    ("wav_fuzzer", "runtime_cpp/device/fuzz/corpus_wav", 100000, 8192),
    # Each input runs an engine over a fresh store copy: far slower per run.
    ("session_fuzzer", "runtime_cpp/device/fuzz/corpus_session", 2000, 8192),
])
def test_cpp_parsers_survive_a_short_fuzzing_run(tmp_path, fuzzer, seeds, runs, max_len):
    binary = FUZZ / fuzzer
    if not binary.exists():
        pytest.skip("make build-fuzz first")
    corpus = tmp_path / "corpus"
    shutil.copytree(REPO / seeds, corpus)
    res = subprocess.run([str(binary), f"-runs={runs}", f"-max_len={max_len}", "-seed=1",
                          f"-rss_limit_mb={_rss_limit_mb()}", "-malloc_limit_mb=2048",
                          str(corpus)], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert f"Done {runs} runs" in res.stderr


@pytest.mark.parametrize("target", ["wav", "image", "idx", "frame", "manifest", "task_file"])
def test_python_parsers_survive_a_short_fuzzing_run(tmp_path, target):
    res = subprocess.run([sys.executable, str(REPO / "scripts/fuzz_python.py"), target,
                          "--work", str(tmp_path), "-runs=20000", "-max_len=16384", "-seed=1",
                          f"-rss_limit_mb={_rss_limit_mb()}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Done 20000 runs" in res.stderr


def test_what_the_fuzzers_found_is_refused_with_an_input_error():
    """Two findings of scripts/fuzz_python.py, fixed: a PNG whose IHDR chunk is cut
    short (Pillow raised a bare ValueError past the reader), and a WAV header with an
    absurd sample rate (scipy's resampler raised on a ratio of 0)."""
    from knowcache.data import input_contract
    png = (REPO / "scripts/fuzz_corpus/image/rgb.png").read_bytes()
    damaged = png[:8] + (4).to_bytes(4, "big") + png[12:]     # IHDR says 4 bytes, not 13
    with pytest.raises(input_contract.InputError, match="fuzz.png: a damaged image"):
        input_contract.image_pixels(damaged, "fuzz.png", (3, 16, 16))
    wav = (REPO / "runtime_cpp/device/fuzz/corpus_wav/pcm16_mono").read_bytes()
    huge_rate = wav[:24] + (4_000_000_000).to_bytes(4, "little") + wav[28:]
    with pytest.raises(input_contract.InputError, match="4000000000 Hz"):
        input_contract.waveform(huge_rate, "fuzz.wav")
