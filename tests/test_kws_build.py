"""The kws build end to end at toy scale, with real recordings split by speaker:
spectrogram branch, speech-embedding full model, students on the frozen
embeddings, partitions, int8 export, gates calibrated with the real clips as
their own group, and the model card's real-voices section."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from knowcache.build import pipeline, publish
from knowcache.data import folders, speech, store
from knowcache.models import ModelRecord
from knowcache.runtime import Manifest, Partition
from conftest import SETUP_OPS, program_calls
from test_real_voices import real_voices

# The module's fixtures train and export a whole toy build (minutes on a busy
# machine): more than the suite's default 300 s per test must be allowed.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")


@pytest.fixture(scope="module")
def kws_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("kws")
    real = root / "real"
    for word in WORDS:                       # 8 clips of each of 8 words, several speakers
        for f in sorted((real_voices() / word).glob("*.wav"))[:8]:
            (real / word).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, real / word / f.name)
    synth = speech.generate(speech.SynthConfig(per_word=(6, 2, 2)))
    cfg = pipeline.BuildConfig(task="kws", work=root / "work", quick=True, device="cpu", k=2,
                               full_epochs=4, student_epochs=2, real=real,
                               real_copies=2)
    data = store.with_real(synth, real, seed=cfg.seed, copies=cfg.real_copies)
    logs: list[str] = []
    pipeline.train_full(cfg, data, logs.append)
    pipeline.run_specialize(cfg, data, logs.append)
    pipeline.run_partition(cfg, data, logs.append)
    out = root / "models" / "kws"
    metrics = publish.publish(cfg, out, logs.append, data=data)
    return out, metrics, data, cfg, real


def test_real_clips_are_split_by_speaker(kws_build):
    _, metrics, data, _, real = kws_build
    clips = folders.load(real, data.labels)
    parts = np.array([folders.speaker_part(s, store.REAL_PARTS) for s in clips.speaker])
    added = metrics["real"]["source"]["added"]
    speakers = {p: set(added[p]["speakers"]) for p in added}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["val"] & speakers["test"])
    for part in ("train", "val", "test"):
        assert added[part]["clips"] == int((parts == part).sum())
    # the training part also holds two perturbed takes of each of its recordings
    train_real = store.is_real(data.train)
    assert train_real.sum() == 3 * added["train"]["clips"]
    assert {g.removeprefix(store.REAL_GROUP) for g in data.train.group[train_real]} \
        == speakers["train"]
    assert metrics["real"]["test_samples"] == int((parts == "test").sum())
    assert metrics["test_samples"] == len(data.test) - int((parts == "test").sum())


def test_full_program_is_the_two_branch_network(kws_build):
    models, _, data, cfg, _ = kws_build
    record = ModelRecord.load(cfg.work / "full.pt")
    net = record.build()
    assert net.spectrogram is not None
    assert len(net.backbone.head.members) == record.config.members == 3
    x = data.test.x[:4].astype(np.float32) / 32768
    program = Partition.from_file(str(models / "full.pte"))
    calls, ops = program_calls((models / "full.pte").read_bytes())
    assert calls == 1 and set(ops) <= SETUP_OPS, (calls, ops)    # both branches in XNNPACK
    got = np.stack([program.run(row[None]).reshape(-1) for row in x])
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3 * (np.abs(want).max() + 1))


def test_device_programs_fit_the_budget_and_drop_the_branch(kws_build):
    models, metrics, _, cfg, _ = kws_build
    manifest = Manifest.load(str(models / "manifest.json"))
    for info in manifest.partitions:
        assert info.input.shape == [1, 16000] and info.input.sample_rate == 16000
        if info.role != "full":
            assert info.bytes <= 512 * 1024, (info.id, info.bytes)
            calls, ops = program_calls((models / info.file).read_bytes())
            assert calls == 1 and set(ops) <= SETUP_OPS, (info.id, calls, ops)
            assert ModelRecord.load(cfg.work / f"{info.id}.pt").build().spectrogram is None
    assert metrics["real"]["models"]["cached"]["size_ratio"] > 1


def test_real_clips_calibrate_their_own_gate(kws_build):
    """Every student's threshold lets at most 1% of accepted real validation answers
    disagree with the full model (the synthesized ones reach that on their own too)."""
    models, _, data, _, _ = kws_build
    manifest = Manifest.load(str(models / "manifest.json"))
    real = store.is_real(data.val)
    x = data.val.x[real].astype(np.float32) / 32768
    full = Partition.from_file(str(models / "full.pte"))
    full_pred = np.array([np.argmax(full.run(r[None])) for r in x])
    for info in manifest.partitions:
        if info.role == "full":
            continue
        prog = Partition.from_file(str(models / info.file))
        logits = np.stack([prog.run(r[None]).reshape(-1) for r in x])
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        ent = -(p * np.log(np.clip(p, 1e-30, 1))).sum(1) / np.log(p.shape[1])
        own = [data.labels.index(c) for c in info.labels if c != "other"]
        pred = np.array(own + [-1] * (len(info.labels) - len(own)))[logits.argmax(1)]
        accepted = (pred >= 0) & (ent <= info.threshold + 1e-6)
        mapped = np.where(np.isin(full_pred, own), full_pred, -1)
        if accepted.sum():
            assert (pred[accepted] == mapped[accepted]).mean() >= 0.99, info.id


def test_model_card_reports_real_voices(kws_build):
    models, metrics, _, _, _ = kws_build
    card = (models / "README.md").read_text()
    assert "## Real recordings" in card and "were only measured" in card
    doc = json.loads((models / "metrics.json").read_text())
    assert doc["real"]["models"]["full"]["samples"] == metrics["real"]["test_samples"]


@pytest.fixture(scope="module")
def kws_staged(kws_build, tmp_path_factory):
    """A copy of the toy models with the full model as a staged program (distilled,
    calibrated exits); the build's own folder stays as published."""
    from knowcache import manifest as manifest_doc
    from knowcache.layer_cache import build as staged_build
    built, _, data, cfg, _ = kws_build
    models = tmp_path_factory.mktemp("kws-staged") / "kws"
    shutil.copytree(built, models)
    record = ModelRecord.load(cfg.work / "full.pt")
    doc = manifest_doc.load(models)
    entry = staged_build.run(record, data, models, input_shape=[1, 16000],
                             input_extra=doc.input_extra(), train_samples=300, seed=0,
                             log=lambda _: None)
    return models, entry, data, record


def test_kws_staged_program_is_the_full_model_and_its_branch_reads_the_waveform(kws_staged):
    from knowcache.build import flops
    from knowcache.layer_cache import build as staged_build
    models, entry, data, record = kws_staged
    staged = staged_build.load(entry, models)
    # trunk stages, then the spectrogram branch: the only stage that takes the waveform
    assert [staged.stage_reads_input(i) for i in range(staged.num_stages)] == \
        [False] * (staged.num_stages - 1) + [True]
    st = entry["staged"]
    assert st["total_flops"] == flops.program_flops("kws", record.config, len(record.labels),
                                                    [1, 16000])
    full = Partition.from_file(str(models / "full.pte"))
    x = data.test.x[:4].astype(np.float32) / 32768
    for row in x:
        _, logits = staged.run_all(row[None])
        np.testing.assert_allclose(logits, full.run(row[None]).reshape(-1), atol=1e-4)
    # run stage by stage: the last stage needs the waveform, and uses it
    act = row[None]
    for i in range(staged.num_stages - 1):
        act = staged.run_stage(i, act)
    with pytest.raises(ValueError, match="also reads the model input"):
        staged.run_stage(staged.num_stages - 1, act)
    last = staged.run_stage(staged.num_stages - 1, act, row[None])
    np.testing.assert_allclose(staged.run_head(last), staged.run_all(row[None])[1], atol=1e-5)
    silent = staged.run_stage(staged.num_stages - 1, act, np.zeros_like(row[None]))
    assert not np.allclose(silent, last)


def test_the_last_kws_exit_is_the_full_model_s_own_head_without_its_branch(kws_staged):
    """The exit on the embeddings runs the full model's keyword heads (trained with
    the spectrogram branch dropped for half of their samples) with the branch's
    features at zero: the exported exit gives exactly that, and distillation
    left those weights as they were (only its selector learned)."""
    from knowcache.layer_cache import build as staged_build
    models, entry, data, record = kws_staged
    staged = staged_build.load(entry, models)
    net = record.build()
    x = data.test.x[:4].astype(np.float32) / 32768
    with torch.no_grad():
        e = net.embeddings(torch.from_numpy(x)).transpose(1, 2)
        want = []
        for m in net.backbone.head.members:
            h = m.relu(m.conv2(m.relu(m.conv1(e)))).amax(dim=2)
            want.append(m.fc(torch.cat([h, h.new_zeros(len(h), m.side.out_features)], 1)))
        want = torch.stack(want).mean(0).numpy()
    last = staged.num_exits - 1
    got = np.stack([staged.run_all(row[None])[0][last].logits.reshape(-1) for row in x])
    np.testing.assert_allclose(got, want, atol=1e-4 * (np.abs(want).max() + 1))
    assert entry["staged"]["exits"][last]["feature_dim"] == e.shape[1] * e.shape[2]


def test_eval_reports_layer_caching_through_the_engine(kws_staged, kws_build, tmp_path):
    """With exit 0 made to take every query (confidence threshold 0), eval must
    report exactly exit 0's answers and cost, computed here from the program's
    own exit outputs and the manifest's FLOPs."""
    from knowcache import evaluate
    from knowcache import manifest as manifest_doc
    from knowcache.data.dataset import model_input
    from knowcache.layer_cache import build as staged_build
    models, entry, _, _ = kws_staged
    _, _, _, _, real = kws_build
    copy = tmp_path / "kws"
    shutil.copytree(models, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    st = next(p for p in doc["partitions"] if p["role"] == "staged")["staged"]
    for i, e in enumerate(st["exits"]):
        e["thresholds"] = {g: (0.0 if (i, g) == (0, "confidence") else None)
                           for g in e["thresholds"]}
    (copy / "manifest.json").write_text(json.dumps(doc))
    ev = evaluate.run(copy, real)
    assert set(ev.layer_cache) == {"confidence"}
    f = ev.layer_cache["confidence"]
    assert f["exit_rate"][0] == 1.0 and f["whole_rate"] == 0.0
    cost = st["stages"][0]["flops"] + st["exits"][0]["flops"]
    assert f["flops_saved"] == pytest.approx(1 - cost / st["total_flops"])
    staged = staged_build.load(manifest_doc.load(copy).entry("staged"), copy)
    kept = folders.leave_out(folders.load_task_folder(real, tuple(ev.labels), None),
                             evaluate.fitted_speakers(copy))[0]
    x = model_input("kws", kept.x)
    exit0 = np.array([np.argmax(staged.run_all(r[None])[0][0].logits) for r in x])
    assert f["accuracy"] == pytest.approx(np.mean(exit0 == kept.y))
    assert f["agreement"] == pytest.approx(np.mean(exit0 == ev.full_pred))
    assert "Layer caching" in evaluate.card_section(ev, "toy")


def test_hidden_augment_trains_the_heads_on_the_trunk_s_hidden_layer(tmp_path):
    """--hidden-augment 11: the full model's heads train on the activations after
    conv 10 (run through the frozen convs 11.. at each step); the trunk stays the
    pretrained one, and the packed rows give the same logits as the embeddings."""
    from knowcache.build import training
    from knowcache.models.speech_embedding import SpeechEmbedding
    synth = speech.generate(speech.SynthConfig(per_word=(3, 1, 1)))
    cfg = pipeline.BuildConfig(task="kws", work=tmp_path, quick=True, device="cpu",
                               full_epochs=1, hidden_augment=11)
    assert cfg.full_config().augment_at == 11 and cfg.student_config().augment_at == 0
    full = pipeline.train_full(cfg, synth, lambda *_: None)
    net = full.build()
    rows = pipeline.inputs(cfg, synth, "val", hidden_at=11)
    assert rows.dtype == torch.float16 and (tmp_path / "hidden11.npz").is_file()
    shape = training.hidden_shape(net, 11)
    # the 34 of the layer's 46 time steps that see the clip (speech_embedding.Margins)
    assert shape == (72, 34, 4) and rows.shape[1] == 72 * 34 * 4 + cfg.full_config().side
    fresh = SpeechEmbedding().state_dict()
    for name, value in net.backbone.trunk.state_dict().items():
        assert torch.equal(value, fresh[name]), f"trunk weight {name} moved"
    via_hidden = training.predict(training.trainable("kws", net, 11), rows, torch.device("cpu"))
    via_embeddings = training.predict(training.trainable("kws", net),
                                      pipeline.inputs(cfg, synth, "val"), torch.device("cpu"))
    np.testing.assert_allclose(via_hidden, via_embeddings, atol=0.05)


def test_the_full_program_turns_back_into_its_network(kws_build):
    """Without the build folder's full.pt (a clone has only the programs), `export
    --staged` and `serve --learn-exits` rebuild the kws full model from full.pte:
    trunk, head ensemble and spectrogram branch, with the branch's input scaling."""
    from knowcache.models.from_program import recover
    models, _, data, cfg, _ = kws_build
    record = ModelRecord.load(cfg.work / "full.pt")
    x = data.test.x[:4].astype(np.float32) / 32768
    rebuilt = recover(models / "full.pte", "kws", record.labels, x)
    assert rebuilt.config == record.config
    with torch.no_grad():
        want = record.build()(torch.from_numpy(x)).numpy()
        got = rebuilt.build()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3 * (np.abs(want).max() + 1))
