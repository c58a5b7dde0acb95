"""Partition: ExecuTorch programs loaded by the C++ runtime."""

import numpy as np
import pytest
import torch

from knowcache import runtime
from conftest import FEATURES, confident


def executorch_reference(path, x: np.ndarray) -> np.ndarray:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return method.execute([torch.from_numpy(x)])[0].numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outputs_equal_executorch_python_runtime(small_cnn_pte, seed):
    part = runtime.Partition.from_file(str(small_cnn_pte))
    x = np.random.default_rng(seed).normal(size=(1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(part.run(x), executorch_reference(small_cnn_pte, x).ravel(),
                               atol=1e-5, rtol=0)


def test_program_metadata(small_cnn_pte):
    part = runtime.Partition.from_file(str(small_cnn_pte))
    assert part.id == "cnn"
    assert part.input_shape == [1, 3, 16, 16]
    assert part.input_dtype == "float32"
    assert part.num_outputs == 5
    assert part.resident_bytes >= small_cnn_pte.stat().st_size


def test_from_bytes_equals_from_file(tiny_models):
    manifest = runtime.Manifest.load(str(tiny_models / "manifest.json"))
    info = manifest.find("p0")
    data = (tiny_models / "p0.pte").read_bytes()
    a = runtime.Partition.from_bytes(data, info)
    b = runtime.Partition.from_file(str(tiny_models / "p0.pte"), info)
    x = confident(2)
    np.testing.assert_array_equal(a.run(x), b.run(x))
    assert a.info.labels == ["yes", "no", "up", "other"]


def test_outputs_are_copies(tiny_models):
    part = runtime.Partition.from_file(str(tiny_models / "p0.pte"))
    first = part.run(confident(0))
    part.run(confident(1))
    assert np.argmax(first) == 0  # not overwritten by the second call


def test_missing_file(tmp_path):
    with pytest.raises(runtime.NotFoundError, match="no such file"):
        runtime.Partition.from_file(str(tmp_path / "absent.pte"))


@pytest.mark.parametrize("content, message", [
    (b"", "has no bytes"),
    (b"x" * 7, "is not a valid ExecuTorch program"),
    (b"hello world" * 50, "is not a valid ExecuTorch program"),
])
def test_garbage_file_is_corrupt(tmp_path, content, message):
    path = tmp_path / "bad.pte"
    path.write_bytes(content)
    with pytest.raises(runtime.CorruptPartitionError, match=f"bad.pte: partition 'bad' {message}"):
        runtime.Partition.from_file(str(path))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_file_is_corrupt(tmp_path, small_cnn_pte, keep):
    data = small_cnn_pte.read_bytes()
    path = tmp_path / "trunc.pte"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(runtime.CorruptPartitionError, match="trunc.pte: partition 'trunc' "):
        runtime.Partition.from_file(str(path))


def test_sha256_mismatch_is_rejected(tiny_models, tmp_path):
    manifest = runtime.Manifest.load(str(tiny_models / "manifest.json"))
    data = bytearray((tiny_models / "p0.pte").read_bytes())
    data[100] ^= 1
    with pytest.raises(runtime.CorruptPartitionError, match="sha256"):
        runtime.Partition.from_bytes(bytes(data), manifest.find("p0"))
    # Verification can be turned off for bytes checked elsewhere.
    with pytest.raises(runtime.CorruptPartitionError, match="bytes but the manifest says"):
        runtime.Partition.from_bytes(bytes(data[:-1]), manifest.find("p0"))


def test_manifest_labels_must_match_program(tiny_models):
    manifest = runtime.Manifest.load(str(tiny_models / "manifest.json"))
    # p1's program has 4 logits; full's manifest entry lists 6 labels.
    with pytest.raises(runtime.InvalidInputError,
                       match="partition 'full' has 6 labels but the program outputs 4 logits"):
        runtime.Partition.from_file(str(tiny_models / "p1.pte"), manifest.find("full"),
                                    verify=False)


def test_wrong_shape_and_dtype(tiny_models):
    part = runtime.Partition.from_file(str(tiny_models / "p0.pte"))
    with pytest.raises(runtime.InvalidInputError, match="expects 1x16"):
        part.run(np.zeros((1, FEATURES + 1), np.float32))
    with pytest.raises(ValueError, match="float64"):
        part.run(np.zeros((1, FEATURES), np.float64))
    with pytest.raises(runtime.InvalidInputError, match="dtype is int32"):
        part.run(np.zeros((1, FEATURES), np.int32))
    with pytest.raises(runtime.InvalidInputError, match="NumPy array"):
        part.run([[0.0] * FEATURES])


def test_non_contiguous_input(tiny_models):
    part = runtime.Partition.from_file(str(tiny_models / "p0.pte"))
    x = np.random.default_rng(0).normal(size=(1, 2 * FEATURES)).astype(np.float32)[:, ::2]
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(part.run(x), part.run(np.ascontiguousarray(x)))
