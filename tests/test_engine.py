"""Engine end to end: real .pte partitions, real HTTP to a scripted cloud."""

import pickle
import time

import numpy as np
import pytest

from knowcache import runtime
from conftest import FEATURES, TASK_LABELS, confident, unsure


def make_engine(models, url=None, *, install=("cached",), **kw):
    manifest = runtime.Manifest.load(str(models / "manifest.json"))
    engine = runtime.Engine("kws", cloud_url=url, manifest=manifest, **kw)
    for pid in install:
        engine.install_from_manifest(pid)
    return engine


def test_confident_input_is_answered_locally(tiny_models, cloud):
    url, state = cloud
    engine = make_engine(tiny_models, url)
    r = engine.infer(confident(1))
    assert (r.source, r.label, r.index, r.partition_id) == ("local", "no", 1, "cached")
    assert r.entropy < 0.01 and r.confidence > 0.99
    assert r.network_us == 0 and r.uplink_bytes == 0
    assert state.requests == []


def test_unsure_input_goes_to_cloud_with_protocol_headers(tiny_models, cloud):
    url, state = cloud
    state.token = "s3cret"
    engine = make_engine(tiny_models, url, token="s3cret")
    x = unsure() + np.float32(0.3)             # not 16-bit PCM: the float32 bytes go up
    x[0, :3] = 0
    r = engine.infer(x)
    assert (r.source, r.label, r.index) == ("cloud", "down", 3)
    assert r.uplink_bytes == x.nbytes and r.network_us > 0
    req = state.requests[-1]
    assert req["path"] == "/v1/kws/infer"
    assert req["headers"]["X-Knowcache-Dtype"] == "float32"
    assert req["headers"]["X-Knowcache-Shape"] == f"1,{FEATURES}"
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert "X-Knowcache-Encoding" not in req["headers"]
    assert req["body"] == x.tobytes()
    # 16-bit audio (values q / 32768) goes as pcm16: int16 q, half the bytes
    q = np.random.default_rng(0).integers(-300, 300, FEATURES).astype(np.int16)
    q[:3] = 0
    pcm = (q.astype(np.float32) / 32768)[None]
    r = engine.infer(pcm)
    assert r.source == "cloud" and r.uplink_bytes == pcm.nbytes // 2
    req = state.requests[-1]
    assert req["headers"]["X-Knowcache-Encoding"] == "pcm16"
    assert req["headers"]["X-Knowcache-Dtype"] == "float32"
    assert req["body"] == q.astype("<i2").tobytes()
    plain = make_engine(tiny_models, url, token="s3cret", pcm16_uploads=False)
    assert plain.infer(pcm).uplink_bytes == pcm.nbytes
    assert state.requests[-1]["body"] == pcm.tobytes()


def test_other_is_always_forwarded(tiny_models, cloud):
    url, state = cloud
    engine = make_engine(tiny_models, url)
    r = engine.infer(confident(2))  # index 2 of "cached" is "other"
    assert r.source == "cloud"
    assert len(state.requests) == 1


def test_hint_is_fetched_verified_installed_and_used(tiny_models, cloud):
    url, state = cloud
    state.hint = "p1"
    engine = make_engine(tiny_models, url, slots=2)
    first = engine.infer(confident(2))  # "other" locally -> cloud, which hints p1
    assert first.source == "cloud" and first.partition_hint == "p1"
    assert engine.wait_for_fetches(10)
    assert engine.cached_ids() == ["p1", "cached"]
    assert engine.active_id() == "p1"
    stats = engine.stats()
    assert stats.fetches == 1 and stats.fetch_failures == 0
    assert stats.fetched_bytes == (tiny_models / "p1.pte").stat().st_size
    # The next similar input stays on the device, answered by p1.
    state.requests.clear()
    nxt = engine.infer(confident(1))
    assert (nxt.source, nxt.partition_id, nxt.label, nxt.index) == ("local", "p1", "left", 4)
    assert state.requests == []


def test_hint_evicts_least_recently_used(tiny_models, cloud):
    # Two slots: p0 is installed first, then used, so "cached" is the least
    # recently used. Evicting the oldest install (FIFO) would drop p0 instead.
    url, state = cloud
    engine = make_engine(tiny_models, url, slots=2, install=("p0", "cached"))
    assert engine.cached_ids() == ["cached", "p0"]
    engine.activate("p0")
    r = engine.infer(confident(0))
    assert (r.source, r.partition_id, r.label) == ("local", "p0", "yes")
    assert engine.cached_ids() == ["p0", "cached"]
    state.hint = "p1"
    assert engine.infer(unsure()).source == "cloud"     # p0 is unsure: the cloud hints p1
    assert engine.wait_for_fetches(10)
    assert engine.cached_ids() == ["p1", "p0"]
    assert engine.stats().cache.evictions == 1


def test_corrupt_download_is_rejected_and_old_partition_kept(tiny_models, cloud):
    url, state = cloud
    state.hint = "p1"
    state.corrupt.add("p1")
    engine = make_engine(tiny_models, url)
    engine.infer(unsure())
    assert engine.wait_for_fetches(10)
    assert engine.cached_ids() == ["cached"]
    stats = engine.stats()
    assert stats.fetch_failures == 1
    assert "sha256" in stats.last_fetch_error


def test_hint_for_unknown_partition_is_a_fetch_failure(tiny_models, cloud):
    url, state = cloud
    state.hint = "p9"
    engine = make_engine(tiny_models, url)
    r = engine.infer(unsure())
    assert r.source == "cloud"
    assert engine.wait_for_fetches(10)
    assert "p9" in engine.stats().last_fetch_error


def test_unreachable_cloud_degrades(tiny_models, closed_port_url):
    engine = make_engine(tiny_models, closed_port_url)
    r = engine.infer(unsure())
    assert r.source == "degraded"
    assert r.label in {"yes", "no", "other"}
    assert "UNAVAILABLE" in r.degraded_reason
    assert engine.stats().cloud_errors == 1


@pytest.mark.parametrize("mode, reason", [
    ("500", "HTTP 500"),
    ("garbage", "not a JSON object"),
    ("wrong_json", "lacks a string 'label'"),
])
def test_bad_cloud_answers_degrade(tiny_models, cloud, mode, reason):
    url, state = cloud
    state.mode = mode
    engine = make_engine(tiny_models, url)
    r = engine.infer(unsure())
    assert r.source == "degraded"
    assert reason in r.degraded_reason


def test_slow_cloud_degrades_within_the_read_timeout(tiny_models, cloud):
    url, state = cloud
    state.mode = "slow"
    state.slow_s = 3.0
    engine = make_engine(tiny_models, url, read_timeout_ms=300)
    t0 = time.monotonic()
    r = engine.infer(unsure())
    assert time.monotonic() - t0 < 2.0
    assert r.source == "degraded"
    assert "DEADLINE_EXCEEDED" in r.degraded_reason


def test_wrong_token_degrades_with_a_clear_reason(tiny_models, cloud):
    url, state = cloud
    state.token = "right"
    engine = make_engine(tiny_models, url, token="wrong")
    r = engine.infer(unsure())
    assert r.source == "degraded"
    assert "401" in r.degraded_reason and "token" in r.degraded_reason


def test_no_partition_and_no_cloud_raises(tiny_models, closed_port_url):
    engine = make_engine(tiny_models, closed_port_url, install=())
    with pytest.raises(runtime.CloudUnavailableError, match="no partition is cached"):
        engine.infer(unsure())
    device_only = make_engine(tiny_models, None, install=())
    with pytest.raises(runtime.FailedPreconditionError,
                       match="no partition is cached and no cloud is configured"):
        device_only.infer(unsure())


def test_empty_cache_answers_through_cloud_then_warms(tiny_models, cloud):
    url, state = cloud
    state.hint = "p0"
    engine = make_engine(tiny_models, url, install=())
    assert engine.infer(confident(0)).source == "cloud"
    assert engine.wait_for_fetches(10)
    r = engine.infer(confident(0))
    assert (r.source, r.partition_id, r.label) == ("local", "p0", "yes")


def test_bad_input_never_reaches_the_cloud(tiny_models, cloud):
    url, state = cloud
    engine = make_engine(tiny_models, url)
    with pytest.raises(runtime.InvalidInputError, match=f"input shape is 2x{FEATURES} but"):
        engine.infer(np.zeros((2, FEATURES), np.float32))
    with pytest.raises(ValueError, match="float64 is not supported"):
        engine.infer(np.zeros((1, FEATURES), np.float64))
    with pytest.raises(ValueError, match=">f4 is not supported.*machine's byte order"):
        engine.infer(confident(0).astype(">f4"))        # same values, bytes swapped
    for bad in (np.nan, np.inf):      # refused locally, as the cloud refuses them
        x = confident(0)
        x[0, 1] = bad
        with pytest.raises(runtime.InvalidInputError, match="NaN or infinite values"):
            engine.infer(x)
    assert state.requests == []


def test_an_unpickled_array_is_taken_like_the_original(tiny_models):
    # pickle gives an equal float32 dtype object that is not NumPy's singleton
    x = pickle.loads(pickle.dumps(confident(0)))
    engine = make_engine(tiny_models)
    assert engine.infer(x).label == engine.infer(confident(0)).label == "yes"


def test_stats_objects_print_their_fields(tiny_models):
    engine = make_engine(tiny_models)
    engine.infer(confident(0))
    text = repr(engine.stats())
    assert text.startswith("EngineStats(queries=1, local=1, cloud=0, degraded=0"), text
    assert "cache=SlotCacheStats(hits=" in text and "object at 0x" not in text
    info = engine.manifest.find("cached")
    assert repr(info.input).startswith("InputSpec(dtype='float32', shape=[1, ")


def test_bad_config_is_rejected():
    with pytest.raises(runtime.InvalidInputError, match="must start with http"):
        runtime.Engine("kws", cloud_url="localhost:8000")
    with pytest.raises(runtime.InvalidInputError, match="num_slots"):
        runtime.Engine("kws", slots=0)
    with pytest.raises(runtime.InvalidInputError, match="task"):
        runtime.Engine("")
    with pytest.raises(runtime.InvalidInputError, match="admit_after_hints"):
        runtime.Engine("kws", admit_after_hints=9, hint_window=8)
    assert runtime.Engine("kws", admit_after_hints=3).config.admit_after_hints == 3


def test_manifest_for_another_task_is_rejected(tiny_models):
    engine = runtime.Engine("vision")
    with pytest.raises(runtime.InvalidInputError, match="task 'kws'"):
        engine.set_manifest(runtime.Manifest.load(str(tiny_models / "manifest.json")))


def test_from_models_dir_pins_cached(tiny_models):
    engine = runtime.Engine.from_models_dir(tiny_models, slots=1)
    assert engine.cached_ids() == ["cached"]
    # The pinned cached partition cannot be evicted to make room.
    with pytest.raises(runtime.ResourceExhaustedError, match="pinned"):
        engine.install_from_manifest("p0")


def test_threshold_override(tiny_models):
    engine = make_engine(tiny_models, None, threshold=1.0)
    assert engine.infer(unsure()).source == "local"


def test_concurrent_infers_from_python_threads(tiny_models, cloud):
    """Each input has its own known answer, so answers handed to the wrong
    thread would show: a strong feature i is answered locally by the full
    program with label i, a weak one goes to the cloud, which answers its argmax."""
    from concurrent.futures import ThreadPoolExecutor

    url, state = cloud
    state.mode = "argmax"
    engine = make_engine(tiny_models, url, install=("full",))
    inputs, expected = [], []
    for n in range(120):
        i, strong = n % len(TASK_LABELS), n % 3 != 0
        x = np.zeros((1, FEATURES), np.float32)
        x[0, i] = 2.0 if strong else 0.05
        inputs.append(x)
        expected.append(("local" if strong else "cloud", TASK_LABELS[i], i))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(engine.infer, inputs))
    assert [(r.source, r.label, r.index) for r in results] == expected
    stats = engine.stats()
    assert stats.queries == 120
    assert stats.local == 80 and stats.cloud == 40


def test_cloud_client_direct(tiny_models, cloud):
    url, _ = cloud
    client = runtime.CloudClient(url)
    manifest = client.fetch_manifest("kws")
    assert [p.id for p in manifest.partitions] == ["cached", "p0", "p1", "full"]
    data = client.fetch_partition("kws", "p0")
    assert runtime.sha256_hex(data) == manifest.find("p0").sha256
    with pytest.raises(runtime.NotFoundError, match="404"):
        client.fetch_partition("kws", "nope")
    answer = client.infer("kws", unsure())
    assert answer.label == "down" and answer.model_version == "1"
