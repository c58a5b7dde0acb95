"""The one input contract (data/input_contract.py, docs/inputs.md): what every front
end accepts, converts and refuses, and that the front ends read a file alike."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from knowcache.data import audio, folders, input_contract
from knowcache.data.input_contract import InputError, InputShape

RATE = 16000
KWS = InputShape((1, RATE), sample_rate=RATE)
VISION = InputShape((1, 1, 28, 28), image_size=(1, 28, 28))


def tone(seconds: float, rate: int = RATE, at: float = 0.0, length: float = 0.3) -> np.ndarray:
    """Quiet noise with a 440 Hz burst of ``length`` s starting at ``at`` s."""
    n = int(seconds * rate)
    x = np.random.default_rng(0).normal(0, 1e-3, n)
    t = np.arange(int(length * rate)) / rate
    start = int(at * rate)
    x[start:start + len(t)] += 0.5 * np.sin(2 * np.pi * 440 * t)
    return x.astype(np.float32)


def wav_bytes(x: np.ndarray, rate: int = RATE, bits: int = 16, channels: int = 1,
              tag: int = 1, data_size: int | None = None) -> bytes:
    """A WAV file by hand: ``tag`` 1 (PCM) or 3 (float), any width."""
    frames = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if tag == 3:
        pcm = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        pcm = np.clip(np.round(frames * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif bits == 24:
        v = np.clip(np.round(frames * (2 ** 23 - 1)), -2 ** 23, 2 ** 23 - 1).astype("<i4")
        pcm = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        dtype = "<i2" if bits == 16 else "<i4"
        pcm = np.clip(np.round(frames * (2 ** (bits - 1) - 1)), -2 ** (bits - 1),
                      2 ** (bits - 1) - 1).astype(dtype).tobytes()
    width = bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * width * channels, width * channels,
                      bits)
    size = len(pcm) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("bits,tag", [(8, 1), (16, 1), (24, 1), (32, 1), (32, 3), (64, 3)])
def test_every_pcm_width_and_float_reads_as_the_same_waveform(bits, tag):
    x = tone(0.5)
    y, rate = audio.decode_wav(wav_bytes(x, bits=bits, tag=tag), "clip.wav")
    assert rate == RATE and len(y) == len(x)
    assert np.abs(y - x).max() < (1.5 / 128 if bits == 8 else 1e-4)


def test_stereo_is_mixed_down_and_other_rates_resampled():
    x = tone(1.0, rate=44100, at=0.3)
    y = input_contract.waveform(wav_bytes(x, rate=44100, channels=2), "stereo.wav")
    assert len(y) == RATE
    assert np.allclose(y, audio.resample(x, 44100, RATE), atol=1e-3)


def test_a_header_promising_more_audio_than_the_file_holds_is_refused():
    data = wav_bytes(tone(1.0), data_size=4 * RATE)      # promises 2 s, holds 1 s
    with pytest.raises(ValueError, match=r"promises 64000 bytes of audio but the file holds "
                                         r"32000; it is cut short"):
        audio.decode_wav(data, "short.wav")
    # A streaming writer's unset size (0xFFFFFFFF) is read to the end of the file.
    y, _ = audio.decode_wav(wav_bytes(tone(1.0), data_size=0xFFFFFFFF), "piped.wav")
    assert len(y) == RATE


def test_compressed_encodings_nan_and_empty_recordings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"8-bit mu-law audio.*sox in.wav -r 16000 -c 1 -b 16"):
        audio.decode_wav(wav_bytes(tone(0.5), bits=8, tag=7), "law.wav")
    bad = tone(0.5)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite samples"):
        audio.decode_wav(wav_bytes(bad, bits=32, tag=3), "nan.wav")
    with pytest.raises(InputError, match="the recording is empty"):
        input_contract.waveform(wav_bytes(np.zeros(0, np.float32)), "empty.wav")
    with pytest.raises(ValueError, match="not a WAV file"):
        audio.decode_wav(b"ID3\x04" + bytes(100), "song.mp3.wav")


def test_a_long_clip_is_cut_to_its_loudest_second_with_a_notice():
    x = tone(3.0, at=1.8)                                 # the burst in the last second
    prepared = input_contract.audio_input(wav_bytes(x), "long.wav", KWS)
    assert prepared.x.shape == (1, RATE)
    assert np.abs(prepared.x).max() > 0.4                 # the burst, not the first second
    assert "3.00 s long; classified its loudest 1 s" in prepared.notice
    short = input_contract.audio_input(wav_bytes(tone(0.5, at=0.1)), "short.wav", KWS)
    assert short.notice is None and short.x[0, :RATE // 4].max() == 0   # centred in silence


def test_data_add_and_infer_cut_a_long_clip_the_same_way(tmp_path):
    x = tone(2.5, at=1.2)
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "a.wav").write_bytes(wav_bytes(x, rate=22050))
    stored = folders.load(tmp_path, ("yes", "no")).x[0].astype(np.float32) / 32768
    prepared = input_contract.prepare(tmp_path / "yes" / "a.wav", KWS)
    assert np.abs(prepared.x[0] - stored).max() < 2 / 32768


def test_folders_missing_files_and_unknown_types_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"is a folder, not a file; pass the files in it"):
        input_contract.prepare(tmp_path, KWS)
    with pytest.raises(InputError, match="no such file"):
        input_contract.prepare(tmp_path / "absent.wav", KWS)
    with pytest.raises(InputError, match=r"cannot tell the task from \.txt"):
        input_contract.task_of(tmp_path / "notes.txt")
    assert input_contract.task_of("a.WAV") == "kws" and input_contract.task_of("b.jpeg") == "vision"
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(tone(0.5)))
    with pytest.raises(InputError, match="audio, but these models take"):
        input_contract.prepare(wav, VISION)


def test_images_are_converted_to_the_task_input_and_raw_pixels_checked(tmp_path):
    from PIL import Image
    rgb = np.zeros((90, 60, 3), np.uint8)
    rgb[:, 30:] = 255                                      # right half white
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    x = input_contract.prepare(tmp_path / "photo.jpg", VISION).x
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    assert x[0, 0, :, :10].max() < 0.1 and x[0, 0, :, -10:].min() > 0.9
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="not a readable image"):
        input_contract.prepare(tmp_path / "broken.png", VISION)
    raw = tmp_path / "pixels.raw"
    raw.write_bytes(np.full(784, 255, np.uint8).tobytes())
    assert input_contract.prepare(raw, VISION).x.min() == 1.0
    nan = np.zeros(784, "<f4")
    nan[3] = np.inf
    raw.write_bytes(nan.tobytes())
    with pytest.raises(InputError, match="NaN or infinite values \\(first at element 3\\)"):
        input_contract.prepare(raw, VISION)


def test_pixels_are_scaled_to_the_manifests_value_range(tmp_path):
    from knowcache.runtime import Manifest
    shipped = Manifest.parse((Path(__file__).resolve().parents[1] /
                              "models/vision/manifest.json").read_text())
    spec = InputShape.of(shipped.partitions[0].input)
    assert spec.value_range == (0.0, 1.0) and spec.image_size == (1, 28, 28)
    raw = tmp_path / "pixels.raw"
    raw.write_bytes(np.array([0, 51, 255] + [0] * 781, np.uint8).tobytes())
    signed = InputShape((1, 1, 28, 28), image_size=(1, 28, 28), value_range=(-1.0, 1.0))
    np.testing.assert_allclose(input_contract.prepare(raw, signed).x.reshape(-1)[:3],
                               [-1.0, -0.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(input_contract.prepare(raw, spec).x.reshape(-1)[:3],
                               [0.0, 0.2, 1.0], atol=1e-6)


def test_python_wave_and_the_contract_agree_on_a_real_recording():
    real = Path(__file__).resolve().parents[2] / "shared/real-voices/speech-commands/yes"
    if not real.is_dir():
        pytest.skip(f"{real} not here")
    clip = sorted(real.glob("*.wav"))[0]
    with wave.open(str(clip)) as w:
        ref = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768
    x, rate = audio.read_wav(clip)
    assert rate == RATE and np.array_equal(x, ref.astype(np.float32))


def test_host_device_infer_converts_what_the_board_would_refuse(tmp_path):
    """`knowcache device --serial P infer` converts on the host before sending: a 44.1 kHz
    stereo 24-bit take is resampled (the board program alone refuses it with a sox hint)."""
    from knowcache.devicelink.inputs import read_input
    f = tmp_path / "take.wav"
    f.write_bytes(wav_bytes(tone(2.0, rate=44100, at=1.2), rate=44100, bits=24, channels=2))
    prepared = read_input("kws", f)
    assert prepared.x.shape == (1, RATE) and prepared.x.dtype == np.float32
    assert np.abs(prepared.x).max() > 0.4 and "2.00 s long" in prepared.notice
    with pytest.raises(InputError, match="is a folder"):
        read_input("kws", tmp_path)
    img = tmp_path / "raw.bin"
    img.write_bytes(bytes(784))
    assert read_input("vision", img).x.shape == (1, 1, 28, 28)
