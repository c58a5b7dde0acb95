"""The JNI bindings and the Java library org.knowcache.runtime (android_app/runtime),
run on the host JVM with JUnit 5 (Debian's junit5 console launcher).

This file prepares what the Java tests compare against, then runs them: tiny
programs exported now (with a partition selector, so that the cloud hints), a
real `knowcache serve` over them, inputs as raw float32 files (spoken keywords,
Fashion-MNIST images, tiny-model inputs), the Python runtime's answers on them
(parity.tsv) and the Python runtime's exception class and sentence on missing,
truncated, tampered and unparsable programs, wrong shapes and bad settings
(errors.tsv). `make build-java` builds the JNI library and the classes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conftest import FEATURES, confident, spoken_words, unsure, write_tiny_models
from knowcache import manifest, runtime

REPO = Path(__file__).resolve().parents[1]
JNI_DIR = REPO / "build/host/runtime_cpp/bindings/jni"
CLASSES = REPO / "build/java/classes"
TEST_CLASSES = REPO / "build/java/test-classes"
JUNIT = Path("/usr/share/java/junit-platform-console-standalone.jar")

PARITY_HEADER = ("name", "models", "plan", "cloud", "input", "shape", "label", "index",
                 "confidence", "entropy", "source", "partition", "hint")
ERRORS_HEADER = ("name", "models", "plan", "slots", "input", "shape", "python_class", "message")


def save_input(fx: Path, name: str, x: np.ndarray) -> str:
    (fx / "inputs").mkdir(exist_ok=True)
    (fx / "inputs" / f"{name}.f32").write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
    return f"inputs/{name}.f32"


def python_engine(models: Path, plan: str, **kw) -> runtime.Engine:
    if plan.startswith("ids:"):
        return runtime.Engine.from_models_dir(models, install=plan[4:].split(","), **kw)
    return runtime.Engine.from_models_dir(models, staged=plan == "staged", **kw)


def fashion_images(n: int) -> list[np.ndarray]:
    from knowcache.data import images
    test = images.fashion_mnist().test
    return [(test.x[i].astype(np.float32) / 255).reshape(1, 1, 28, 28) for i in range(n)]


def parity_rows(fx: Path, tiny: Path, cloud_url: str) -> list[tuple]:
    """The Python runtime's answers, one row per (models, plan, cloud, input)."""
    x4 = np.zeros((1, FEATURES), np.float32)
    x4[0, 4] = 0.3  # the cached model is unsure, the cloud's full model says "left"
    tiny_inputs = {"yes": confident(0), "no": confident(1), "other": confident(2),
                   "unsure": unsure(), "left": x4}
    cases = [("tiny", tiny, "cached", "-", tiny_inputs),
             ("tiny", tiny, "ids:p1,cached", "-", tiny_inputs),
             ("tiny", tiny, "cached", "cloud", {"unsure": unsure(), "left": x4})]
    words = ("yes", "no", "house", "stop")
    spoken = dict(zip(words, spoken_words(words)))
    cases += [("kws", REPO / "models/kws", plan, "-", spoken) for plan in ("cached", "ids:full")]
    pictures = {f"image{i}": x for i, x in enumerate(fashion_images(3))}
    cases += [("vision", REPO / "models/vision", plan, "-", pictures)
              for plan in ("cached", "staged")]
    rows = []
    for prefix, models, plan, cloud, inputs in cases:
        engine = python_engine(models, plan, fetch_hints=False,
                               cloud_url=cloud_url if cloud == "cloud" else None)
        for key, x in inputs.items():
            name = f"{prefix}-{plan}-{cloud}-{key}"
            r = engine.infer(x)
            rows.append((name, models, plan, cloud, save_input(fx, name, x),
                         ",".join(map(str, x.shape)), r.label, r.index, repr(r.confidence),
                         repr(r.entropy), r.source, r.partition_id, r.partition_hint))
    return rows


def faulty_copies(fx: Path, tiny: Path) -> dict[str, Path]:
    """Copies of the tiny models, each broken in one way."""
    out = {}
    for name in ("missing", "truncated", "tampered", "unparsable"):
        out[name] = shutil.copytree(tiny, fx / "faulty" / name / "kws")
    pte = out["missing"] / "cached.pte"
    pte.unlink()
    data = (out["truncated"] / "cached.pte").read_bytes()
    (out["truncated"] / "cached.pte").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (out["tampered"] / "cached.pte").write_bytes(bytes(flipped))
    # Garbage whose size and sha256 the manifest agrees with: only ExecuTorch can refuse it.
    garbage = np.random.default_rng(0).integers(0, 256, len(data), np.uint8).tobytes()
    (out["unparsable"] / "cached.pte").write_bytes(garbage)
    entry = dict(manifest.load(out["unparsable"]).entry("cached"))
    entry.update(bytes=len(garbage), sha256=runtime.sha256_hex(garbage))
    manifest.update(out["unparsable"], entry, bump=False)
    return out


def error_rows(fx: Path, tiny: Path) -> list[tuple]:
    """The Python runtime's exception class and sentence for each broken case."""
    faulty = faulty_copies(fx, tiny)
    good = save_input(fx, "error-unsure", unsure())
    short = save_input(fx, "error-short", np.zeros((1, FEATURES - 1), np.float32))
    flat = save_input(fx, "error-flat", np.zeros(FEATURES, np.float32))
    unscaled = np.zeros((1, 1, 28, 28), np.float32)
    unscaled[0, 0, 0, 5] = 255.0           # pixels not scaled to the value_range
    bright = save_input(fx, "error-unscaled", unscaled)
    cases = [  # name, models, plan, slots, input, the error class and what its sentence says
        ("missing_program", faulty["missing"], "cached", 2, good, runtime.NotFoundError,
         "installing 'cached': no such file: .*cached.pte"),
        ("truncated_program", faulty["truncated"], "cached", 2, good,
         runtime.CorruptPartitionError, "partition 'cached' is [0-9]+ bytes but"),
        ("tampered_program", faulty["tampered"], "cached", 2, good,
         runtime.CorruptPartitionError, "partition 'cached' fails its sha256"),
        ("unparsable_program", faulty["unparsable"], "cached", 2, good,
         runtime.CorruptPartitionError, "partition 'cached' is not a valid"),
        ("missing_models_folder", fx / "no-such-folder", "cached", 2, good,
         runtime.NotFoundError, "no such file: .*no-such-folder/manifest.json"),
        ("unknown_partition", tiny, "ids:p9", 2, good, runtime.NotFoundError,
         "the manifest has no partition 'p9'"),
        ("no_staged_program", tiny, "staged", 2, good, runtime.FailedPreconditionError,
         "the manifest has no staged program"),
        ("zero_slots", tiny, "cached", 0, good, runtime.InvalidInputError,
         "num_slots must be >= 1"),
        ("too_few_slots", tiny, "ids:p0,p1,cached", 2, good, runtime.ResourceExhaustedError,
         "all 2 slots hold pinned partitions"),
        ("wrong_input_shape", tiny, "cached", 2, short, runtime.InvalidInputError,
         "input shape is 1x15 but the model expects 1x16"),
        ("wrong_input_rank", tiny, "cached", 2, flat, runtime.InvalidInputError,
         "input shape is 16 but the model expects 1x16"),
        ("pixels_outside_value_range", REPO / "models/vision", "cached", 2, bright,
         runtime.InvalidInputError,
         "input element 5 is 255, outside the model's value_range \\[0, 1\\]"),
    ]
    rows = []
    for name, models, plan, slots, rel, error, says in cases:
        x = np.fromfile(fx / rel, "<f4").reshape(
            {good: (1, FEATURES), short: (1, FEATURES - 1), flat: (FEATURES,),
             bright: (1, 1, 28, 28)}[rel])
        with pytest.raises(error, match=says) as e:
            python_engine(models, plan, slots=slots).infer(x)
        assert type(e.value) is error, (name, type(e.value))
        message = str(e.value)
        assert "\t" not in message and "\n" not in message, message
        rows.append((name, models, plan, slots, rel, ",".join(map(str, x.shape)),
                     type(e.value).__name__, message))
    return rows


def signed_fixtures(fx: Path, tiny: Path) -> str:
    """Signed copies of the tiny models (keys generated now) for SignedManifestTest;
    its fixtures.properties lines."""
    from knowcache import signing
    keys = {name: signing.generate(fx / "keys", name) for name in ("trusted", "other")}
    folders = {}
    for name, key in (("signed_tiny", "trusted"), ("tampered_manifest", "trusted"),
                      ("unsigned_tiny", None), ("other_key_tiny", "other")):
        folders[name] = shutil.copytree(tiny, fx / "signed" / name / "kws")
        if key:
            signing.sign_manifest(folders[name], keys[key].private)
        else:
            signing.remove_signature(folders[name])
    path = manifest.path_of(folders["tampered_manifest"])
    path.write_bytes(path.read_bytes() + b" ")   # still valid JSON; no longer what was signed
    lines = [f"{n}={p}" for n, p in folders.items()]
    lines += [f"{n}_key={signing.public_of(k.private)}" for n, k in keys.items()]
    return "\n".join(lines) + "\n"


def write_tsv(path: Path, header: tuple, rows: list[tuple]) -> None:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.slow
def test_java_library_on_the_host_jvm_matches_the_python_runtime(tmp_path):
    from knowcache.bench.cloud_process import cloud
    missing = [p for p in (JNI_DIR / "libknowcache_jni.so", CLASSES, TEST_CLASSES, JUNIT)
               if not p.exists()]
    assert not missing, f"{missing} missing: run `make build-java` (make test does)"
    fx = tmp_path / "fixtures"
    fx.mkdir()
    # A selector, so that `knowcache serve` hints the partition holding its answer.
    tiny = write_tiny_models(tmp_path / "cloud-models" / "kws",
                             selector={"kind": "partition_mass", "partitions": ["p0", "p1"]})
    private = write_tiny_models(tmp_path / "private-models" / "kws", private_labels=["no"])
    with cloud(tiny.parent) as c:
        parity = parity_rows(fx, tiny, c.url)
        cloud_row = next(r for r in parity if r[0] == "tiny-cached-cloud-left")
        assert cloud_row[10] == "cloud" and cloud_row[12] == "p1", cloud_row
        write_tsv(fx / "parity.tsv", PARITY_HEADER, parity)
        write_tsv(fx / "errors.tsv", ERRORS_HEADER, error_rows(fx, tiny))
        (fx / "fixtures.properties").write_text(
            f"tiny={tiny}\nvision={REPO / 'models/vision'}\ncloud={c.url}\n"
            f"dead_cloud={closed_port_url()}\ncloud_label={cloud_row[6]}\n"
            f"cloud_hint={cloud_row[12]}\nprivate={private}\n" + signed_fixtures(fx, tiny))
        cmd = ["java", f"-Djava.library.path={JNI_DIR}", f"-Dknowcache.fixtures={fx}",
               "-jar", str(JUNIT), "--class-path", f"{CLASSES}:{TEST_CLASSES}",
               "--select-package", "org.knowcache.runtime", "--reports-dir", str(fx / "reports"),
               "--disable-banner", "--details=tree", "--fail-if-no-tests"]
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=240)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    suites = ET.parse(fx / "reports" / "TEST-junit-jupiter.xml").getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    # Every parity and error row is a test of its own, plus EngineTest's and
    # SignedManifestTest's.
    assert counts["tests"] >= len(parity) + 11 + 8 + 7, counts
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
