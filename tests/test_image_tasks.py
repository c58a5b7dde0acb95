"""Image tasks from a folder: `knowcache data images --folder DIR --task NAME`, then
every stage (build-models, bench, eval, infer) on the new task; bad folders and
task files get errors that say what to fix, and nothing is written for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from knowcache.cli import main
from knowcache.data import image_tasks

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
COLOURS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40),
           "yellow": (200, 200, 40)}
# Different counts per class: the default popularity is by training images, most first.
TRAIN_COUNTS = {"red": 40, "green": 32, "blue": 24, "yellow": 16}


def make_folder(root: Path, counts=TRAIN_COUNTS, test: int = 10, size: int = 16,
                seed: int = 0) -> Path:
    """Coloured squares on noise, RGB PNGs, <root>/train|test/<colour>/*.png."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", counts), ("test", {c: test for c in counts})):
        for name, n in per_class.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
                y, x = rng.integers(0, size // 2, 2)
                a[y:y + size // 2, x:x + size // 2] = COLOURS[name]
                Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KNOWCACHE_DATA_DIR", str(cache))
    return cache


def test_ingest_defaults_follow_the_folder(tmp_path, data_dir):
    root = make_folder(tmp_path / "colours")
    spec, ds = image_tasks.ingest(root, "colours")
    assert spec.labels == ("blue", "green", "red", "yellow")        # folder names, sorted
    assert spec.popularity == ("red", "green", "blue", "yellow")    # most images first
    assert spec.cached_count == 1 and spec.partitions == 2          # 4 // 3 and max(2, 4 // 3)
    assert spec.image_size == (3, 16, 16) and spec.input_shape == [1, 3, 16, 16]
    assert spec.kind == "image"
    # 10% of each class held out for validation, the rest trained on, test as given
    assert len(ds.val) == 4 + 3 + 2 + 2 and len(ds.train) == 112 - len(ds.val)
    assert len(ds.test) == 40 and ds.test.x.shape[1:] == (3, 16, 16)
    assert not set(ds.train.group.tolist()) & set(ds.val.group.tolist())
    from knowcache import tasks
    assert tasks.get("colours") == spec
    assert json.loads((data_dir / "tasks" / "colours" / "task.json").read_text())["cached"] == ["red"]


def test_a_task_file_sets_size_popularity_cache_and_partitions(tmp_path, data_dir):
    root = make_folder(tmp_path / "colours")
    (root / "val" / "blue").mkdir(parents=True)
    Image.new("RGB", (16, 16), COLOURS["blue"]).save(root / "val" / "blue" / "0.png")
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"image_size": [1, 12, 12], "popularity": ["yellow", "blue"],
                                     "cached": ["blue", "yellow"], "private": ["green"],
                                     "partitions": 3}))
    spec, ds = image_tasks.ingest(root, "greys", task_file)
    assert spec.image_size == (1, 12, 12) and ds.train.x.shape[1:] == (1, 12, 12)
    assert spec.popularity[:2] == ("blue", "yellow")          # the cached set leads
    assert set(spec.popularity) == set(spec.labels)
    assert spec.cached_classes() == ("blue", "green", "yellow")   # private classes added
    assert spec.partitions == 3
    assert len(ds.val) == 1 and len(ds.train) == sum(TRAIN_COUNTS.values())


@pytest.mark.parametrize("damage, message", [
    (lambda r: __import__("shutil").rmtree(r / "test"), "has no test/ folder"),
    (lambda r: (r / "train" / "purple").mkdir(), "purple is an empty class"),
    (lambda r: (r / "train" / "red" / "9.png").write_bytes(b"not a png"),
     "9.png: not a readable image"),
    (lambda r: [__import__("shutil").rmtree(r / "train" / c) for c in ("green", "blue", "yellow")],
     "has 1 class folder"),
    (lambda r: (r / "train" / "stray.png").write_bytes(b""), "has images at its top level"),
    (lambda r: (r / "test" / "purple").mkdir(), "class 'purple' is not in train/"),
])
def test_bad_folders_are_refused_with_what_to_fix(tmp_path, data_dir, damage, message):
    root = make_folder(tmp_path / "colours", counts={c: 4 for c in COLOURS}, test=2)
    damage(root)
    with pytest.raises(ValueError, match=message):
        image_tasks.ingest(root, "colours")
    assert not (data_dir / "tasks" / "colours").exists()


@pytest.mark.parametrize("doc, message", [
    ({"sizes": [3, 8, 8]}, r"unknown fields \['sizes'\]"),
    ({"cached": ["purple"]}, r"cached names \['purple'\], not classes"),
    ({"partitions": 9}, "partitions must be 2..4"),
    ({"image_size": [2, 16, 16]}, "image_size must be"),
    ({"cached": ["red", "green"], "private": ["blue", "yellow"]}, "cover every class"),
    ({"labels": ["a", "b"]}, "differ from the class folders"),
    ({"network": [64]}, "network must be an object"),
    ({"network": {"widths": [8, 16], "depth": 3}}, r"network has unknown fields \['depth'\]"),
    ({"network": {"widths": []}}, "network.widths must be 1 to 5 stage widths"),
    ({"network": {"widths": [8, 16], "blocks": [2]}}, "network.blocks must give 1..8 blocks"),
    ({"network": {"widths": [8], "stem_width": 2}}, "network.stem_width must be in 4..1024"),
    ({"network": {"widths": [8], "student_width": 1.5}}, r"student_width must be in \(0, 1\]"),
    ({"network": {"widths": [8], "block": "dense"}}, "network.block must be one of basic, "),
    ({"network": {"widths": [8], "cloud_tta": "rotate"}},
     "network.cloud_tta must be one of none, mirror, mirror_translate"),
    ({"training": 3}, "training must be an object"),
    ({"training": {"momentum": 0.9}}, r"training has unknown fields \['momentum'\]"),
    ({"training": {"optimizer": "lamb"}}, "training.optimizer must be one of adamw, sgd"),
    ({"training": {"epochs": 2.5}}, "training.epochs must be an integer in 1..1000"),
    ({"training": {"lr": -1}}, "training.lr must be a number in"),
    ({"training": {"label_smoothing": True}}, "training.label_smoothing must be a number"),
])
def test_bad_task_files_are_refused(tmp_path, data_dir, doc, message):
    root = make_folder(tmp_path / "colours", counts={c: 4 for c in COLOURS}, test=2)
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        image_tasks.ingest(root, "colours", task_file)
    assert not (data_dir / "tasks" / "colours").exists()


def test_a_task_file_sizes_the_network_and_its_students(tmp_path, data_dir):
    from knowcache.build.pipeline import BuildConfig
    from knowcache.models.resnet import ResNetConfig
    root = make_folder(tmp_path / "colours", counts={c: 10 for c in COLOURS}, test=2)
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"network": {"widths": [8, 16], "blocks": [2, 1],
                                                 "student_width": 0.5}}))
    image_tasks.ingest(root, "sized", task_file)
    cfg = BuildConfig(task="sized", work=tmp_path / "work")
    assert cfg.full_config() == ResNetConfig(in_channels=3, stem_width=8, stem_stride=1,
                                             widths=(8, 16), blocks=(2, 1), strides=(1, 2))
    assert cfg.student_config().widths == (4, 8) and cfg.student_config().blocks == (2, 1)
    image_tasks.ingest(root, "plain")           # no network: the vision recipe's
    plain = BuildConfig(task="plain", work=tmp_path / "work").full_config()
    assert plain.widths == (48, 96, 192) and plain.in_channels == 3


def test_a_task_file_sets_the_block_and_the_training_recipe(tmp_path, data_dir):
    from knowcache.build.pipeline import BuildConfig
    from knowcache.models.resnet import ConvPoolBlock, ResNet
    root = make_folder(tmp_path / "colours", counts={c: 10 for c in COLOURS}, test=2)
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({
        "network": {"widths": [8, 16], "block": "conv_pool"},
        "training": {"optimizer": "sgd", "lr": 0.3, "batch": 128, "epochs": 7,
                     "student_epochs": 4}}))
    image_tasks.ingest(root, "pooled", task_file)
    cfg = BuildConfig(task="pooled", work=tmp_path / "work")
    full = cfg.full_config()
    assert full.block == "conv_pool" and full.strides == (2, 2)
    net = ResNet(full, 4)
    assert all(isinstance(b, ConvPoolBlock) for b in net.stages)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    assert cfg.student_config().block == "conv_pool"
    fit, student = cfg.fit("full"), cfg.fit("student")
    assert (fit.optimizer, fit.lr, fit.batch, fit.epochs) == ("sgd", 0.3, 128, 7)
    assert student.epochs == 4 and fit.weight_decay == 5e-4      # left out: the recipe's
    # build-models --epochs wins over the task file
    assert BuildConfig(task="pooled", work=tmp_path, full_epochs=2).fit("full").epochs == 2


def test_the_airbench_network_whitens_its_input_and_trains_with_its_recipe(tmp_path, data_dir):
    """block "airbench" (whitening stem, Dirac-initialized conv groups with scale-free
    norms, max-pooled head) and optimizer "airbench" (summed loss, decoupled weight
    decay, triangle schedule, lookahead): the stem is set from the training images
    and stays frozen, the norms keep scale 1, and a task built on them learns and
    quantizes to an int8 program that the runtime runs."""
    from knowcache.build import training
    from knowcache.build.pipeline import BuildConfig
    from knowcache.build.quantize import quantize_int8
    from knowcache.build.lower import lower_to_pte
    from knowcache.models.nets import VisionNet
    from knowcache.models.resnet import AirbenchBlock, NormNoScale, ResNet, Whitening
    root = make_folder(tmp_path / "colours", counts={c: 40 for c in COLOURS}, test=10)
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({
        "network": {"widths": [8, 16], "block": "airbench", "student_width": 0.5},
        "training": {"optimizer": "airbench", "lr": 11.5, "weight_decay": 0.0153,
                     "batch": 32, "epochs": 12}}))
    image_tasks.ingest(root, "air", task_file)
    cfg = BuildConfig(task="air", work=tmp_path / "work")
    full = cfg.full_config()
    net = ResNet(full, 4)
    assert isinstance(net.stem[0], Whitening) and net.stem[0].out_channels == 24
    assert all(isinstance(b, AirbenchBlock) for b in net.stages)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    # Dirac: at initialization a conv passes its first input channels through
    block = net.stages[0]
    probe = torch.randn(1, 24, 6, 6)
    assert torch.allclose(block.conv1(probe)[:, :8], probe[:, :8], atol=1e-6)
    assert cfg.student_config().block == "airbench"

    # whitening: the first half of the filters decorrelates 2x2 patches to unit variance
    stem = Whitening(3)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(400, 1, 9, 9, generator=gen)
    images = torch.cat([base, 0.5 * base + 0.1 * torch.randn(400, 1, 9, 9, generator=gen),
                        torch.randn(400, 1, 9, 9, generator=gen)], 1)
    stem.fit_to(images)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, stem.weight[:12]).permute(0, 2, 3, 1)
    cov = torch.cov(out.reshape(-1, 12).T)
    assert torch.allclose(cov, torch.eye(12), atol=0.08), cov.diag()

    from knowcache.data import store
    data = store.for_task("air")
    x, y = training.as_float("air", data.train.x), torch.from_numpy(data.train.y.astype(np.int64))
    model = VisionNet(full, 4, float(x.mean()), float(x.std()))
    weights_before = model.backbone.stem[0].weight.clone()
    fitted = training.fit(model, "air", x, y, cfg.fit("full"), torch.device("cpu"),
                          log=lambda _: None)
    assert not torch.equal(fitted.backbone.stem[0].weight, torch.zeros_like(weights_before))
    stem_w = fitted.backbone.stem[0].weight.clone()
    assert all(torch.all(m.weight == 1) for m in fitted.modules() if isinstance(m, NormNoScale))
    test_x = training.as_float("air", data.test.x)
    with torch.no_grad():
        accuracy = float((fitted(test_x).argmax(1).numpy() == data.test.y).mean())
    assert accuracy >= 0.9, accuracy
    # refitting the same model sets the stem from the data again, then keeps it frozen
    assert torch.allclose(stem_w, training._fit_whitening(fitted, x)[0].weight)
    # a student normalizing as its teacher does takes the teacher's filters, which are
    # what fitting would give; one that normalizes otherwise fits its own
    student = VisionNet(cfg.student_config(), 4, float(x.mean()), float(x.std()))
    taken = training._fit_whitening(student, x, teacher=fitted)[0].weight.clone()
    assert torch.equal(taken, stem_w)
    alone = VisionNet(cfg.student_config(), 4, float(x.mean()), float(x.std()))
    assert torch.allclose(training._fit_whitening(alone, x)[0].weight, taken, atol=1e-5)
    skewed = VisionNet(cfg.student_config(), 4, 0.0, 1.0)
    assert not torch.allclose(training._fit_whitening(skewed, x, teacher=fitted)[0].weight,
                              taken, atol=1e-3)

    from executorch.runtime import Runtime
    q = quantize_int8(fitted, test_x[:16])
    pte = lower_to_pte(q, (test_x[:1],))       # the program reads these bytes: keep them
    method = Runtime.get().load_program(pte).load_method("forward")
    assert int(method.execute([test_x[:1]])[0].argmax()) == int(fitted(test_x[:1]).argmax())


def test_the_cloud_averages_its_test_time_views(tmp_path):
    """cloud_tta: the cloud answers with the full program's logits averaged over
    airbench's views (the image and its mirror; with mirror_translate also the
    image moved a pixel each way, edges reflected); the program stays one view."""
    from knowcache import manifest, tta
    from knowcache.build import lower
    from knowcache.models.nets import VisionNet
    from knowcache.models.resnet import ResNetConfig
    from knowcache.runtime import Partition
    from knowcache.server import registry
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3 * 8 * 8, 5)).astype(np.float32)
    probe = lambda v: v.reshape(len(v), -1) @ weights           # noqa: E731
    x = rng.random((3, 3, 8, 8), dtype=np.float32)

    def mirror(v):
        return (probe(v) + probe(v[..., ::-1])) / 2
    padded = F.pad(torch.from_numpy(x), (1, 1, 1, 1), mode="reflect").numpy()
    moved = (mirror(padded[:, :, :8, :8]) + mirror(padded[:, :, 2:, 2:])) / 2
    assert np.array_equal(tta.run(probe, x, "none"), probe(x))
    assert np.allclose(tta.run(probe, x, "mirror"), mirror(x), atol=1e-5)
    got = tta.run(probe, x, "mirror_translate")
    assert np.allclose(got, (mirror(x) + moved) / 2, atol=1e-5)
    assert not np.allclose(got, mirror(x), atol=1e-2)            # the moved views count
    assert [len(tta.views(x, m)) for m in tta.VIEWS] == list(tta.VIEWS.values())
    # row by row, as the batch-1 programs run: the one-view answer comes from the same runs
    calls = []
    counted = lambda v: calls.append(v) or probe(v)              # noqa: E731
    averaged, plain = tta.run_rows(counted, x, "mirror_translate")
    assert len(calls) == 6 * len(x) and all(len(v) == 1 for v in calls)
    assert np.allclose(averaged, got, atol=1e-5) and np.allclose(plain, probe(x), atol=1e-5)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'"):
        tta.run(probe, x, "rotate")
    with pytest.raises(ValueError, match=r"image inputs \(N, C, H, W\), not shape \[1, 16000\]"):
        tta.run(probe, np.zeros((1, 16000), np.float32), "mirror")

    # the server: a manifest's cloud_tta sets the full model's answers
    config = ResNetConfig(in_channels=3, stem_width=8, stem_stride=1, widths=(8, 16),
                          blocks=(1, 1), strides=(1, 2))
    torch.manual_seed(0)
    net = VisionNet(config, 4, 0.5, 0.25).eval()
    images = torch.rand(6, 3, 16, 16)
    pte = lower.lower_to_pte(net, (images[:1],))
    labels = list("abcd")

    def served(mode, where):
        where.mkdir()
        (where / "full.pte").write_bytes(pte)
        entry = manifest.partition_entry("full", pte, role="full", labels=labels,
                                         file="full.pte", input_shape=[1, 3, 16, 16])
        manifest.write(where, "colours", labels, [entry],
                       **({} if mode is None else {"cloud_tta": mode}))
        return registry.load_task(where)

    plain, views = served(None, tmp_path / "plain"), served("mirror_translate", tmp_path / "tta")
    assert plain.cloud_tta == "none" and views.cloud_tta == "mirror_translate"
    program = Partition.from_file(str(tmp_path / "tta" / "full.pte"))
    with torch.no_grad():
        torch_views = [net(torch.from_numpy(v)).numpy() for v in tta.views(images.numpy(),
                                                                           "mirror_translate")]
    want = tta.combine(torch_views, "mirror_translate")
    for i, row in enumerate(images.numpy()):
        z = tta.run(program.run, row[None], "mirror_translate").reshape(-1)
        assert np.allclose(z, want[i], atol=1e-4)
        answer = views.run(row[None])
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert answer.index == int(z.argmax()) and answer.confidence == pytest.approx(p.max(), 1e-4)
        z1 = program.run(row[None]).reshape(-1)
        assert plain.run(row[None]).confidence == pytest.approx(
            float(np.exp(z1 - z1.max()).max() / np.exp(z1 - z1.max()).sum()), 1e-4)
    with pytest.raises(ValueError, match="cloud_tta: unknown test-time augmentation 'spin'"):
        served("spin", tmp_path / "bad")


def test_airbench_schedule_rises_then_falls_and_lookahead_ends_on_the_slow_weights():
    from knowcache.build import training
    f = [training._triangle(i, 100) for i in range(101)]
    assert f[0] == pytest.approx(0.2) and max(f) == pytest.approx(1.0, abs=0.01)
    assert f[100] == pytest.approx(0.07) and int(np.argmax(f)) == 23
    net = torch.nn.Linear(2, 1)
    look = training.Lookahead(net, steps=10)
    slow = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    look.step(net, 3)                       # not a multiple of 5: untouched
    assert torch.allclose(net.weight, slow + 1)
    look.step(net, 5)                       # decay 0.95^5 * 0.5^3: mostly the fast weights
    d = 0.95 ** 5 * 0.125
    assert torch.allclose(net.weight, slow + (1 - d), atol=1e-6)
    look.finish(net)                        # decay 1: the slow copy wins
    assert torch.allclose(net.weight, slow + (1 - d), atol=1e-6)


def test_the_shipped_cifar10_task_file_fits_the_budgets():
    """tasks/cifar10.json: a full program of at most 12 MB float32, students of
    at most 200 KB as int8 (a convolution or linear weight a byte, an int32 bias
    per output channel, as the norms fold into the convolutions; a tenth left for
    the program); and the shipped programs are within both."""
    from knowcache.models.nets import image_config
    from knowcache.models.resnet import ResNet
    from knowcache.tasks import TaskSpec
    doc = image_tasks._resolve(json.loads((ROOT / "tasks" / "cifar10.json").read_text()),
                               tuple(sorted(CIFAR10)), np.ones(10), (3, 32, 32), "cifar10")
    spec = image_tasks.spec_from_dict("cifar10", doc)
    assert isinstance(spec, TaskSpec) and spec.partitions in (4, 5) and spec.cached_count == 4
    full = image_config(spec)
    weights = lambda cfg: sum(p.numel() for p in ResNet(cfg, 10).parameters())  # noqa: E731
    assert weights(full) * 4 <= 12e6 * 0.95

    def int8_bytes(cfg) -> int:
        layers = [m for m in ResNet(cfg, 10).modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        return sum(m.weight.numel() + 4 * m.weight.shape[0] for m in layers)
    assert int8_bytes(full.scaled(spec.network.student_width)) <= 200e3 * 0.9
    shipped = json.loads((ROOT / "models" / "cifar10" / "manifest.json").read_text())
    for entry in shipped["partitions"]:
        size = (ROOT / "models" / "cifar10" / entry["file"]).stat().st_size
        assert size <= (12e6 if entry["role"] in ("full", "staged") else 200e3), entry["id"]


def test_the_gpu_script_trains_a_task_without_executorch(tmp_path):
    """scripts/gpu_train.sh from a .tar.gz of a folder, under a python3 that cannot
    import ExecuTorch or the C++ runtime (as on the GPU machine): every model of
    the task trained, the work folder packed into $OUT."""
    import tarfile
    root = make_folder(tmp_path / "pack" / "colours", counts={c: 6 for c in COLOURS}, test=2)
    src = tmp_path / "colours.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        tar.add(root, arcname="colours")
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"network": {"widths": [8, 16], "blocks": [1, 1]}}))
    python = tmp_path / "python3"
    python.write_text(f"""#!{sys.executable}
import runpy, sys
for name in ("executorch", "knowcache._runtime"):
    sys.modules[name] = None             # import fails, as where they are not installed
assert sys.argv[1:3] == ["-m", "knowcache.cli"], sys.argv
sys.argv = ["knowcache", *sys.argv[3:]]
runpy.run_module("knowcache.cli", run_name="__main__")
""")
    python.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": str(python), "OUT": str(out), "OMP_NUM_THREADS": "1",
           "KNOWCACHE_DATA_DIR": str(tmp_path / "cache")}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), "colours", str(src),
                          str(task_file), "--quick", "--device", "cpu", "--epochs", "1",
                          "--student-epochs", "1"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with tarfile.open(out / "colours-work.tar") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"full.pt", "cached.pt", "generic.pt", "p0.pt", "p1.pt", "plan.json"} <= names
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), "colours"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_names_and_unknown_tasks(tmp_path, data_dir):
    root = make_folder(tmp_path / "colours", counts={c: 4 for c in COLOURS}, test=2)
    with pytest.raises(ValueError, match="'vision' is built in"):
        image_tasks.ingest(root, "vision")
    with pytest.raises(ValueError, match="use 1-32 lowercase letters"):
        image_tasks.ingest(root, "My Task")
    res = CliRunner().invoke(main, ["bench", "--task", "nope"])
    assert res.exit_code == 2
    assert "unknown task 'nope'" in res.output and "knowcache data images" in res.output
    res = CliRunner().invoke(main, ["data", "images", "--folder", str(root)])
    assert res.exit_code == 2 and "--folder needs --task NAME" in res.output


@pytest.mark.slow
def test_an_image_folder_task_goes_through_every_stage(tmp_path, data_dir):
    root = make_folder(tmp_path / "colours")
    env = {**os.environ, "KNOWCACHE_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}

    def cli(*args, timeout=900):
        res = subprocess.run([sys.executable, "-m", "knowcache.cli", *args], capture_output=True,
                             text=True, env=env, timeout=timeout, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
        return res.stdout

    # the task file only sets a small network whose cloud answers over two views
    task_file = tmp_path / "colours.json"
    task_file.write_text(json.dumps({"network": {"widths": [16, 32], "cloud_tta": "mirror"}}))
    out = cli("data", "images", "--folder", str(root), "--task", "colours",
              "--task-file", str(task_file))
    assert "task colours: 4 classes, input 3x16x16, cached red" in out
    models = tmp_path / "models"
    cli("build-models", "--task", "colours", "--quick", "--work", str(tmp_path / "work"),
        "--out", str(models / "colours"))
    manifest = json.loads((models / "colours" / "manifest.json").read_text())
    assert manifest["task"] == "colours" and manifest["labels"] == ["blue", "green", "red", "yellow"]
    roles = sorted(p["role"] for p in manifest["partitions"])
    assert roles == ["cached", "full", "generic", "partition", "partition"]
    assert all(p["input"]["shape"] == [1, 3, 16, 16] and p["input"]["value_range"] == [0, 1]
               for p in manifest["partitions"])
    cached = next(p for p in manifest["partitions"] if p["role"] == "cached")
    assert cached["labels"][:1] == ["red"]
    assert manifest["cloud_tta"] == "mirror"
    full = json.loads((models / "colours" / "metrics.json").read_text())["models"]["full"]
    assert full["test_time_views"] == 2 and 0 <= full["accuracy_one_view"] <= 1

    cli("bench", "--task", "colours", "--models", str(models), "--queries", "30",
        "--systems", "cloud_only,two_stage,cachenet", "--rtt-ms", "2",
        "--json", str(tmp_path / "bench.json"))
    report = json.loads((tmp_path / "bench.json").read_text())
    for name in ("cloud_only", "two_stage", "cachenet"):
        assert sum(report["systems"][name]["answers"].values()) == 30
        assert report["systems"][name]["answers"]["failed"] == 0
    # fidelity is agreement with the cloud's answers, over its views
    assert report["systems"]["cloud_only"]["fidelity"] == 1.0
    assert "mirror test-time views" in report["fidelity_reference"]["systems"]

    out = cli("eval", "--task", "colours", "--models", str(models / "colours"), "--data",
              str(root / "test"), "--out", str(tmp_path / "eval"))
    assert (tmp_path / "eval" / "colours-confusion.png").is_file()
    assert "one view" in out

    out = cli("infer", "--task", "colours", "--models", str(models / "colours"),
              str(root / "test" / "red" / "0.png"))
    assert "0.png" in out

    # The cloud tier under load: the load client learns the input from the manifest.
    cli("bench-serve", "--task", "colours", "--models", str(models), "--clients", "2",
        "--seconds", "1", "--json", str(tmp_path / "load.json"))
    for row in json.loads((tmp_path / "load.json").read_text())["rows"]:
        assert row["requests"] > 0 and row["failures"] == 0, row

    # The models carry their task: a clone without the data (an empty cache) can
    # still evaluate and bench them from a folder of images, as `make demo` does.
    assert json.loads((models / "colours" / "task.json").read_text())["cached"][:1] == ["red"]
    env["KNOWCACHE_DATA_DIR"] = str(tmp_path / "empty-cache")
    cli("eval", "--task", "colours", "--models", str(models / "colours"), "--data",
        str(root / "test"), "--out", str(tmp_path / "eval2"))
    assert (tmp_path / "eval2" / "colours-confusion.png").is_file()
    res = subprocess.run([sys.executable, "-m", "knowcache.cli", "bench", "--task", "colours",
                          "--models", str(models), "--queries", "10"], capture_output=True,
                         text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode != 0 and "--data" in res.stderr and "Traceback" not in res.stderr
