"""Data: synthesized keywords (determinism, split by voice), image and Speech
Commands loaders, and clear errors for bad paths."""

from __future__ import annotations

import gzip
import pickle
import wave

import numpy as np
import pytest

from knowcache.data import Dataset, Split, audio, cache_dir, images, speech, speech_commands, store
from knowcache.tasks import KWS, KWS_WORDS, SILENCE

TINY = speech.SynthConfig(seed=3, per_word=(1, 1, 1))


@pytest.fixture(scope="module")
def tiny_speech() -> Dataset:
    return speech.generate(TINY, workers=2)


def test_speech_is_deterministic_given_a_seed(tiny_speech):
    again = speech.generate(TINY, workers=1)
    for s in Dataset.SPLITS:
        assert np.array_equal(tiny_speech.split(s).x, again.split(s).x)
        assert np.array_equal(tiny_speech.split(s).group, again.split(s).group)
    other = speech.generate(speech.SynthConfig(seed=4, per_word=(1, 1, 1)), workers=2)
    assert not np.array_equal(tiny_speech.train.x, other.train.x)


def test_speech_splits_never_share_a_voice_variant(tiny_speech):
    variants = {s: {g.split("+")[1] for g in tiny_speech.split(s).group} for s in Dataset.SPLITS}
    assert not variants["train"] & variants["test"]
    assert not variants["train"] & variants["val"]
    assert not variants["val"] & variants["test"]
    plan = tiny_speech.meta["variants"]
    assert variants["test"] <= set(plan["test"])


def test_speech_clips_are_one_second_with_every_class(tiny_speech):
    assert tiny_speech.train.x.shape == (len(KWS.labels), 16000)
    assert tiny_speech.train.x.dtype == np.int16
    assert sorted(tiny_speech.train.y.tolist()) == list(range(len(KWS.labels)))
    words = tiny_speech.train.x[tiny_speech.train.y != KWS.index(SILENCE)]
    assert (np.abs(words).max(axis=1) > 500).all()   # every word is audible


def test_synthesis_uses_only_espeak_voices():
    voices = speech.english_voices()
    assert "en-us" in voices
    assert not any("mb-" in v or "flite" in v or "festival" in v for v in voices)


def test_dataset_round_trip_and_bad_paths(tmp_path, tiny_speech):
    path = tiny_speech.save(tmp_path / "d.npz")
    back = Dataset.load(path)
    assert back.labels == tiny_speech.labels and np.array_equal(back.test.x, tiny_speech.test.x)
    with pytest.raises(FileNotFoundError, match="knowcache data"):
        Dataset.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a knowcache data set"):
        Dataset.load(tmp_path / "junk.npz")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KNOWCACHE_DATA_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"


def test_fashion_mnist_from_debian_idx_files():
    ds = images.fashion_mnist()
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.train.x.dtype == np.uint8
    assert len(ds.train) + len(ds.val) == 60000 and len(ds.test) == 10000
    assert not set(ds.train.group.tolist()) & set(ds.val.group.tolist())
    assert sorted(np.unique(ds.test.y).tolist()) == list(range(10))


def test_image_loaders_reject_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        images.fashion_mnist(tmp_path / "nope")
    # Three dimensions declared, two given: the header itself is cut short.
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated header \(12 bytes; "
                                         r"3 dimensions need 16\)"):
        images.fashion_mnist(tmp_path)
    # A whole train-images file and no labels file.
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") * 3 + b"\x07"))
    with pytest.raises(FileNotFoundError, match=r"train-labels-idx1-ubyte\[\.gz\] not found"):
        images.fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="CIFAR-10"):
        images.cifar10(tmp_path)
    with pytest.raises(ValueError, match="truncated"):
        images.read_idx(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "t")


def test_cifar10_pickle_layout(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 20))}
        (root / name).write_bytes(pickle.dumps(batch))
    ds = images.cifar10(tmp_path)
    assert ds.train.x.shape[1:] == (3, 32, 32)
    assert len(ds.train) + len(ds.val) == 100 and len(ds.test) == 20
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        images.cifar10(tmp_path)


def _write_wav(path, samples: np.ndarray, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.to_int16(samples).tobytes())


def test_speech_commands_layout(tmp_path):
    rng = np.random.default_rng(0)
    for word in KWS_WORDS:
        for speaker in ("aaaa1111", "bbbb2222", "cccc3333"):
            _write_wav(tmp_path / word / f"{speaker}_nohash_0.wav", rng.uniform(-.5, .5, 12000))
    _write_wav(tmp_path / "_background_noise_" / "white.wav", rng.uniform(-.1, .1, 48000))
    (tmp_path / "validation_list.txt").write_text(
        "\n".join(f"{w}/bbbb2222_nohash_0.wav" for w in KWS_WORDS))
    (tmp_path / "testing_list.txt").write_text(
        "\n".join(f"{w}/cccc3333_nohash_0.wav" for w in KWS_WORDS))
    ds = speech_commands.load(tmp_path, silence_per_split=(3, 2, 2))
    assert len(ds.train) == 35 + 3 and len(ds.val) == 35 + 2 and len(ds.test) == 35 + 2
    assert set(ds.test.group.tolist()) == {"cccc3333", "noise:white"}
    assert ds.train.x.shape[1] == 16000
    _write_wav(tmp_path / "yes" / "dddd4444_nohash_0.wav", np.zeros(8000), rate=8000)
    with pytest.raises(ValueError, match="8000 Hz"):
        speech_commands.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="Speech Commands"):
        speech_commands.load(tmp_path / "yes")


def test_store_shrink_is_seeded():
    ds = Dataset("vision", ("a", "b"), *(Split(np.arange(10)[:, None], np.arange(10) % 2,
                                               np.arange(10)) for _ in range(3)), "t", {})
    a, b = store.shrink(ds, (4, 3, 2), 0), store.shrink(ds, (4, 3, 2), 0)
    assert len(a.train) == 4 and np.array_equal(a.train.x, b.train.x)


def test_perturbed_takes_of_a_recording_keep_the_length_and_vary():
    rate = 16000
    t = np.arange(rate) / rate
    word = np.where((t > 0.3) & (t < 0.6), 0.5 * np.sin(2 * np.pi * 440 * t), 0).astype(np.float32)
    takes = [audio.perturb(word, rate, np.random.default_rng(i)) for i in range(6)]
    assert all(take.shape == word.shape and take.dtype == np.float32 for take in takes)
    assert all(np.abs(take).max() <= 0.9 + 1e-6 for take in takes)
    again = audio.perturb(word, rate, np.random.default_rng(3))
    np.testing.assert_array_equal(again, takes[3])                # seeded
    assert min(np.abs(a - b).max() for i, a in enumerate(takes) for b in takes[i + 1:]) > 0.01
    # speed perturbation changes the tone's pitch: the spectral peak moves off 440 Hz
    peaks = [np.fft.rfftfreq(rate, 1 / rate)[np.argmax(np.abs(np.fft.rfft(
        audio.perturb(word, rate, np.random.default_rng(i), noise_prob=0, reverb_prob=0))))]
        for i in range(6)]
    assert max(abs(p - 440) for p in peaks) > 10 and all(370 <= p <= 510 for p in peaks)


def test_shift_moves_and_zero_fills():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(audio.shift(x, 2), [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(audio.shift(x, -2), [3, 4, 5, 0, 0])
    np.testing.assert_array_equal(audio.shift(x, 0), x)
