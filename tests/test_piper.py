"""piper-tts keyword clips: reproducible, labelled, heard (not silence), added to
the training split only, cached, and weighted beside real and espeak-ng clips."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from knowcache.build import pipeline
from knowcache.cli import main
from knowcache.data import piper, store
from knowcache.data.dataset import Dataset, Split
from knowcache.tasks import KWS, SILENCE

WORDS = [w for w in KWS.labels if w != SILENCE]


@pytest.fixture(scope="module")
def one_take_each():
    return piper.generate(piper.PiperConfig(seed=3, per_word=1))


def test_one_clip_of_every_keyword_in_label_order(one_take_each):
    x, y = one_take_each
    assert x.shape == (len(WORDS), piper.SAMPLE_RATE) and x.dtype == np.int16
    assert [KWS.labels[i] for i in y] == WORDS
    peaks = np.abs(x.astype(np.int32)).max(1) / 32768
    assert peaks.min() >= 0.04               # the gain is drawn from 0.05..0.9 of full scale
    # a word, not noise alone: the loudest 100 ms is well above the quietest
    frames = (x.astype(np.float64) / 32768).reshape(len(x), 10, -1)
    rms = np.sqrt((frames ** 2).mean(2))
    assert (rms.max(1) / (rms.min(1) + 1e-9) > 3).mean() >= 0.9


def test_the_same_seed_gives_the_same_clips_in_another_process(one_take_each, tmp_path):
    # The voice draws noise inside its ONNX graph; unseeded, each process differs.
    out = tmp_path / "x.npy"
    subprocess.run([sys.executable, "-c", "import sys, numpy as np; from knowcache.data import "
                    "piper; np.save(sys.argv[1], piper.generate(piper.PiperConfig(seed=3, "
                    "per_word=1))[0])", str(out)], check=True, timeout=300)
    assert np.array_equal(np.load(out), one_take_each[0])


def _tiny(n: int = 4) -> Dataset:
    rng = np.random.default_rng(0)
    def split(group: str) -> Split:
        return Split(rng.integers(-100, 100, (n, 16000)).astype(np.int16),
                     np.arange(n, dtype=np.int16), np.array([group] * n))
    return Dataset("kws", KWS.labels, split("en+m1"), split("en+m2"), split("en+m3"), "tiny", {})


def test_piper_clips_join_the_training_split_only_and_are_cached(tmp_path, monkeypatch,
                                                                  one_take_each):
    monkeypatch.setenv("KNOWCACHE_DATA_DIR", str(tmp_path))
    made = []
    monkeypatch.setattr(piper, "generate", lambda config, progress=None: made.append(config)
                        or one_take_each)
    base = _tiny()
    ds = store.with_piper(base, per_word=1, seed=3)
    assert len(ds.train) == len(base.train) + len(WORDS)
    assert np.array_equal(ds.val.x, base.val.x) and np.array_equal(ds.test.x, base.test.x)
    marked = store.is_piper(ds.train)
    assert marked.sum() == len(WORDS) and not marked[:len(base.train)].any()
    assert np.array_equal(ds.train.x[marked], one_take_each[0])
    assert ds.source == f"tiny + piper-tts joe ({len(WORDS)} clips)"
    assert ds.meta["piper"]["clips"] == len(WORDS) and ds.meta["piper"]["config"]["seed"] == 3
    again = store.with_piper(base, per_word=1, seed=3)       # from the cache file this time
    assert len(made) == 1 and np.array_equal(again.train.x, ds.train.x)
    with pytest.raises(ValueError, match="per_word must be 1 or more"):
        store.with_piper(base, per_word=0)


def test_sample_weights_give_each_kind_its_share(tmp_path):
    n_real, n_piper, n_espeak = 5, 7, 20
    groups = (["real:a"] * n_real) + ([piper.GROUP] * n_piper) + (["en+m1"] * n_espeak)
    total = len(groups)
    train = Split(np.zeros((total, 16000), np.int16), np.zeros(total, np.int16),
                  np.array(groups))
    empty = Split(np.zeros((0, 16000), np.int16), np.zeros(0, np.int16), np.array([], str))
    data = Dataset("kws", KWS.labels, train, empty, empty, "mixed", {})
    cfg = pipeline.BuildConfig(task="kws", work=tmp_path, real_weight=0.5, piper_weight=0.15)
    w = pipeline.sample_weights(cfg, data).numpy()
    share = lambda a, b: w[a:b].sum() / w.sum()     # noqa: E731
    assert share(0, n_real) == pytest.approx(0.5)
    assert share(n_real, n_real + n_piper) == pytest.approx(0.15)
    assert share(n_real + n_piper, total) == pytest.approx(0.35)
    assert w.mean() == pytest.approx(1.0)
    too_much = pipeline.BuildConfig(task="kws", work=tmp_path, real_weight=0.5, piper_weight=0.6)
    with pytest.raises(ValueError, match="leave no training weight"):
        pipeline.sample_weights(too_much, data)


def test_piper_clips_per_word_by_build():
    def clips(**kw) -> int:
        return pipeline.BuildConfig(work=None, **kw).piper_clips_per_word
    assert clips(task="kws") == 0                     # opt-in
    assert clips(task="kws", piper_per_word=80) == 80
    assert clips(task="kws", piper_per_word=80, quick=True) == 2
    assert clips(task="kws", piper_per_word=80, speech_commands="sc") == 0
    assert clips(task="vision", piper_per_word=80) == 0


def test_cli_refuses_a_piper_weight_that_leaves_espeak_nothing(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    res = CliRunner().invoke(main, ["train", "--task", "kws", "--real", str(real),
                                    "--piper-per-word", "80", "--piper-weight", "0.5",
                                    "--work", str(tmp_path / "w")])
    assert res.exit_code == 2
    assert "--piper-weight" in res.output and "give less than 0.5" in res.output
