"""Google's speech_embedding re-implemented in PyTorch equals openWakeWord's ONNX
models run by onnxruntime, and survives export to an ExecuTorch program."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knowcache.build import lower
from knowcache.models import build_net
from knowcache.models.nets import EmbeddingHeadConfig
from knowcache.models.speech_embedding import (GoogleMel, SpeechEmbedding, openwakeword_model,
                                               padded_samples)
from knowcache.runtime import Partition

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is installed by `make setup`")


@pytest.fixture(scope="module")
def speech():
    rng = np.random.default_rng(3)
    t = np.arange(34000) / 16000
    x = 3000 * np.sin(2 * np.pi * 440 * t) * (t > 0.6) * (t < 1.3) + rng.normal(0, 200, 34000)
    return x.astype(np.int16)


def onnx_mel(x_int16: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(openwakeword_model("melspectrogram")))
    return np.squeeze(s.run(None, {"input": x_int16[None].astype(np.float32)})[0]) / 10 + 2


def test_mel_equals_onnx_front_end(speech):
    n = padded_samples(16000, 0.5)
    ours = GoogleMel(n)(torch.from_numpy(speech[:n].astype(np.float32) / 32768)[None])[0]
    ref = onnx_mel(speech[:n])
    assert ours.shape == ref.shape == (GoogleMel(n).frames, 32)
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-4)


def test_embedding_equals_onnx_on_every_window(speech):
    mel = onnx_mel(speech)
    frames = 76 + 8 * ((len(mel) - 76) // 8)
    windows = np.stack([mel[i:i + 76] for i in range(0, frames - 75, 8)])
    s = ort.InferenceSession(str(openwakeword_model("embedding_model")))
    ref = s.run(None, {"input_1": windows[..., None].astype(np.float32)})[0].reshape(-1, 96)
    with torch.no_grad():
        ours = SpeechEmbedding().eval()(torch.from_numpy(mel[None, :frames].astype(np.float32)))[0]
    assert ours.shape == (SpeechEmbedding.windows(frames), 96) == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-3 * np.abs(ref).max())


def test_window_count_rejects_misaligned_frames():
    with pytest.raises(ValueError, match="76 \\+ a multiple of 8"):
        SpeechEmbedding.windows(80)


def test_exported_keyword_program_equals_pytorch(tmp_path, speech):
    torch.manual_seed(0)
    net = build_net("kws", EmbeddingHeadConfig(hidden=16), 5).eval()
    path = tmp_path / "kws.pte"
    path.write_bytes(lower.lower_to_pte(net, (torch.zeros(1, 16000),)))
    x = (speech[8000:24000].astype(np.float32) / 32768)[None]
    got = Partition.from_file(str(path)).run(x).reshape(-1)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy().reshape(-1)
    np.testing.assert_allclose(got, want, atol=1e-3 * (np.abs(want).max() + 1))
