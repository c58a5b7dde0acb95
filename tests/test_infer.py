"""`knowcache infer`: WAVs and images from the host through the device runtime, one
line per file, bad files reported without stopping the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from knowcache.cli import main
from knowcache.data import audio

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real-voices" / "speech-commands"
RATE = 16000


def invoke(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args)], catch_exceptions=False)


def json_lines(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """A real "yes" and "stop", as recorded and as a 44.1 kHz stereo 24-bit 3 s take."""
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is not here (a user's clone)")
    d = tmp_path_factory.mktemp("spoken")
    out = {}
    for word in ("yes", "stop"):
        clip = sorted((REAL / word).glob("*.wav"))[0]
        x, rate = audio.read_wav(clip)
        assert rate == RATE
        long = np.concatenate([np.zeros(RATE), x, np.zeros(RATE)]).astype(np.float32)
        y = audio.resample(long, RATE, 44100)
        stereo = np.stack([y, y], axis=1).reshape(-1)
        v = np.clip(np.round(stereo * (2 ** 23 - 1)), -2 ** 23, 2 ** 23 - 1).astype("<i4")
        pcm = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        import struct
        fmt = struct.pack("<HHIIHH", 1, 2, 44100, 44100 * 6, 6, 24)
        body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + \
            struct.pack("<I", len(pcm)) + pcm
        converted = d / f"{word}-44k-stereo-24bit.wav"
        converted.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
        out[word] = (clip, converted)
    return out


def test_a_recorded_wav_and_its_converted_long_take_get_the_same_answer(spoken):
    files = [f for pair in spoken.values() for f in pair]
    res = invoke("--model", "full", "--json", *files)
    assert res.exit_code == 0, res.output
    got = json_lines(res)
    assert [g["file"] for g in got] == [str(f) for f in files]
    for (word, _), i in zip(spoken.items(), (0, 2)):
        original, converted = got[i], got[i + 1]
        assert original["label"] == converted["label"] == word
        assert original["source"] == "local" and original["partition"] == "full"
        assert abs(original["confidence"] - converted["confidence"]) < 0.1
        assert "notice" not in original
        assert "classified its loudest 1 s" in converted["notice"]
    text = invoke("--model", "full", spoken["yes"][1])
    assert text.exit_code == 0
    line = text.stdout.strip()
    assert line.startswith(str(spoken["yes"][1])) and " yes " in line and "local" in line
    assert line.endswith(" ms") and "%" in line
    assert "note: " in text.stderr and "3.00 s long" in text.stderr


def test_images_are_answered_as_the_engine_answers_the_dataset_pixels(tmp_path):
    from PIL import Image

    from knowcache.data import images
    from knowcache.runtime import Engine
    test = images.fashion_mnist().test
    files = []
    for i in range(4):
        files.append(tmp_path / f"item{i}.png")
        Image.fromarray(test.x[i, 0]).save(files[-1])
    engine = Engine.from_models_dir(REPO / "models/vision", fetch_hints=False)
    want = [engine.infer(test.x[i][None].astype(np.float32) / 255) for i in range(4)]
    got = json_lines(invoke("--json", *files))
    assert [g["label"] for g in got] == [w.label for w in want]
    assert [g["source"] for g in got] == [w.source for w in want]
    assert all(g["task"] == "vision" and g["partition"] == "cached" for g in got)


def test_bad_files_get_one_line_each_and_the_good_ones_still_run(tmp_path):
    from PIL import Image
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(good)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot a wav at all")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    folder = tmp_path / "clips"
    folder.mkdir()
    res = invoke(folder, tmp_path / "absent.png", corrupt, notes, good)
    assert res.exit_code == 1
    assert res.stdout.count("\n") == 1 and res.stdout.startswith(str(good))
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 4 and all(line.startswith("note: ") for line in lines
                                    if line not in errors), res.stderr
    for line, path, fix in zip(errors, (folder, tmp_path / "absent.png", corrupt, notes),
                               ("pass the files in it", "check the path",
                                "a WAV file with no audio", "name the task with --task")):
        assert line.startswith(f"error: {path}: ") and fix in line, line
    assert "Traceback" not in res.output
    as_json = json_lines(invoke("--json", folder, good))
    assert "is a folder" in as_json[0]["error"] and "label" in as_json[1]


def test_models_folder_one_level_too_high_or_of_the_other_task_says_which_to_pass(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"")
    res = invoke("--models", REPO / "models", png)
    assert res.exit_code == 1 and "holds the models of cifar10, kws, vision one level down; " \
        f"pass --models {REPO / 'models' / 'cifar10'}" in res.output
    res = invoke("--models", REPO / "models/kws", "--task", "vision", png)
    assert res.exit_code == 1 and "holds kws models, not vision" in res.output
    res = invoke("--models", tmp_path, png)
    assert res.exit_code == 1 and "no manifest.json in" in res.output
    res = invoke("--model", "nope", png)
    assert res.exit_code == 1
    assert f"error: {png}: " in res.stderr and "has no program 'nope'; pass --model with one " \
        "of: full, cached, generic, p0" in res.stderr


def test_without_a_cloud_or_with_one_down_uncertain_answers_come_back_degraded(tmp_path):
    from PIL import Image

    from knowcache.data import images
    test = images.fashion_mnist().test
    # The first ankle boots: a class the cached model leaves to the cloud ("other").
    boots = np.flatnonzero(test.y == 9)[:3]
    files = []
    for i in boots:
        files.append(tmp_path / f"boot{i}.png")
        Image.fromarray(test.x[i, 0]).save(files[-1])
    for extra in ((), ("--cloud", "http://127.0.0.1:9")):
        got = json_lines(invoke("--json", *extra, *files))
        degraded = [g for g in got if g["source"] == "degraded"]
        assert degraded and all(g["degraded_reason"] for g in degraded), got
        assert all(g["source"] in ("local", "degraded") for g in got)


def test_no_executorch_info_lines_on_stderr(tmp_path):
    """ExecuTorch logs cpuinfo / thread-pool INFO lines unless told otherwise; they land in
    the middle of every command's output. Below KNOWCACHE_LOG's threshold (warn) now."""
    import os
    import subprocess
    import sys
    from PIL import Image
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    env = {k: v for k, v in os.environ.items() if k != "KNOWCACHE_LOG"}
    res = subprocess.run([sys.executable, "-m", "knowcache.cli", "infer", "--model", "full",
                          str(png)], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "executorch" not in res.stderr and "cpuinfo" not in res.stderr, res.stderr
    env["KNOWCACHE_LOG"] = "info"        # still there for whoever asks
    res = subprocess.run([sys.executable, "-m", "knowcache.cli", "infer", "--model", "full",
                          str(png)], capture_output=True, text=True, timeout=120, env=env)
    assert "executorch: " in res.stderr, res.stderr


def test_getting_started_shows_what_infer_prints(tmp_path):
    """docs/getting-started.md pastes `knowcache infer` output for two Speech Commands
    clips and a Fashion-MNIST item; the same files must still get the same answers."""
    import re
    import shutil

    from PIL import Image

    from knowcache.data import images
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is not here (a user's clone)")
    shutil.copy(REAL / "yes/af405b69_nohash_0.wav", tmp_path / "yes.wav")
    shutil.copy(REAL / "stop/b49caed3_nohash_1.wav", tmp_path / "stop.wav")
    Image.fromarray(images.fashion_mnist().test.x[0, 0]).resize((280, 280)).save(
        tmp_path / "boot.png")
    doc = (REPO / "docs/getting-started.md").read_text()
    for args in ((), ("--model", "full")):
        command = " ".join(("knowcache infer", *args, "yes.wav stop.wav boot.png"))
        block = doc.split(f"$ {command}\n", 1)[1].split("```", 1)[0]
        shown = re.findall(r"^(\S+)\s+(\S+)\s+([\d.]+)%\s+(\w+)", block, re.M)
        files = [tmp_path / f for f in ("yes.wav", "stop.wav", "boot.png")]
        got = json_lines(invoke("--json", *args, *files))
        assert [(f.name, g["label"], f"{100 * g['confidence']:.1f}", g["source"])
                for f, g in zip(files, got)] == shown, command
