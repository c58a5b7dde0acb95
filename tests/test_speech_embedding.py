"""Google's speech_embedding re-implemented in PyTorch equals openWakeWord's ONNX
models run by onnxruntime, and survives export to an ExecuTorch program."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SETUP_OPS, program_calls
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
    # front end, trunk and head all in one XNNPACK call: nothing runs in portable kernels
    calls, ops = program_calls(path.read_bytes())
    assert calls == 1 and set(ops) <= SETUP_OPS, (calls, ops)
    x = (speech[8000:24000].astype(np.float32) / 32768)[None]
    got = Partition.from_file(str(path)).run(x).reshape(-1)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy().reshape(-1)
    np.testing.assert_allclose(got, want, atol=1e-3 * (np.abs(want).max() + 1))


def test_the_trunk_convolves_only_where_the_clip_is_and_answers_the_same(speech):
    """A kws model's trunk keeps, layer by layer, only the time steps that see the
    clip (plus one step of the padding each side): its embeddings and hidden
    activations equal the whole trunk's, for about two thirds of its FLOPs."""
    from knowcache.build import flops
    from knowcache.models.speech_embedding import Margins

    net = build_net("kws", EmbeddingHeadConfig(hidden=16), 5).eval()
    trunk, whole = net.backbone.trunk, SpeechEmbedding().eval()
    assert isinstance(trunk.margins, Margins)
    clip = torch.from_numpy(speech[8000:24000].astype(np.float32) / 32768)
    x = clip.repeat(3, 1)
    x[1] *= 1e-3                                  # a faint clip: another padding value
    x[2, :12000] = 0                              # a clip that starts late
    with torch.no_grad():
        mel = net.features(x)
        want = whole(mel)
        torch.testing.assert_close(trunk(mel), want, rtol=0, atol=1e-5)
        for k in (3, 11):
            kept = trunk.trunk(mel.unsqueeze(1), 0, k)
            a, n, t = trunk.margins.states[k]
            assert kept.shape[2] == n < t
            torch.testing.assert_close(trunk.margins.whole(kept, k),
                                       whole.trunk(mel.unsqueeze(1), 0, k), rtol=0, atol=1e-5)
            # resuming from the whole activations (cut to the kept steps) or the kept ones
            torch.testing.assert_close(trunk.embed(trunk.trunk(trunk.margins.whole(kept, k), k)),
                                       want, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="time steps"):
            trunk.trunk(mel.unsqueeze(1)[:, :, :100], 0, 1)
    assert flops.count(trunk, mel[:1]) < 0.7 * flops.count(whole, mel[:1])


def test_margins_that_reach_the_ends_keep_every_step():
    from knowcache.models.speech_embedding import Margins

    m = Margins(204, 0, 204)
    assert all(a == 0 and n == t for a, n, t in m.states)
    with pytest.raises(ValueError, match="inside the input"):
        Margins(204, 150, 100)
