"""`knowcache serve --ray` beyond the shared HTTP tests (tests/test_serve_ray_http.py):
a model replica killed under load is replaced while every request is answered or
cleanly refused; the exit learner fed by every replica (publish, rollback); the CLI's
Ray options; Ray not installed."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from knowcache.server import ServeConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
# serial: the session's Ray cluster needs the machine to itself (Makefile, test-py)
pytestmark = pytest.mark.serial

VISION = {"X-Knowcache-Dtype": "float32", "X-Knowcache-Shape": "1,1,28,28"}


def replica_actors(app: str, deployment: str) -> list[str]:
    """The names of a deployment's live replica actors (Serve names them
    SERVE_REPLICA::<app>#<deployment>#<id>, in namespace "serve")."""
    import ray
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#"))


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve
    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


@pytest.mark.slow
def test_a_replica_killed_under_load_is_replaced_and_no_request_hangs(ray_serve):
    import ray
    x = np.zeros((1, 1, 28, 28), np.float32).tobytes()
    with ray_serve.running(ServeConfig(models=MODELS, queue_limit=64)) as url:
        app = ray_serve.last_app
        before = replica_actors(app, "model-vision")
        assert len(before) == 2
        codes: list[int] = []

        async def client(c: httpx.AsyncClient, until: float):
            while time.monotonic() < until:
                r = await c.post(url + "/v1/vision/infer", content=x, headers=VISION)
                codes.append(r.status_code)
                if r.status_code != 200:
                    assert r.headers.get("retry-after") == "1", r.text
                    await asyncio.sleep(0.05)

        async def load_and_kill():
            # A client that waits longer than this on one request has hung.
            async with httpx.AsyncClient(timeout=20) as c:
                until = time.monotonic() + 8
                clients = [asyncio.create_task(client(c, until)) for _ in range(8)]
                await asyncio.sleep(2)
                killed_at = time.monotonic()
                ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
                await asyncio.gather(*clients)
                return killed_at

        killed_at = asyncio.run(load_and_kill())
        deadline = killed_at + 60
        while time.monotonic() < deadline:
            after = replica_actors(app, "model-vision")
            if len(after) == 2 and before[0] not in after and \
                    running_replicas(app, "model-vision") == 2:
                break
            time.sleep(0.5)
        replaced_s = time.monotonic() - killed_at
        after = replica_actors(app, "model-vision")
        print(f"replica replaced in {replaced_s:.1f} s; answers: "
              f"{ {c: codes.count(c) for c in set(codes)} }")
        assert before[0] not in after and len(after) == 2, (before, after)
        assert set(codes) <= {200, 429, 503}, codes
        assert codes.count(200) > 0.9 * len(codes)
        # Still serving, on both replicas.
        r = httpx.post(url + "/v1/vision/infer", content=x, headers=VISION, timeout=20)
        assert r.status_code == 200, r.text


def test_ray_options_need_ray():
    from click.testing import CliRunner

    from knowcache.cli import main
    res = CliRunner().invoke(main, ["serve", "--models", str(MODELS), "--max-replicas", "3"])
    assert res.exit_code == 1
    assert "--max-replicas only apply to the Ray back end; add --ray" in res.output
    res = CliRunner().invoke(main, ["serve", "--models", str(MODELS), "--ray",
                                    "--min-replicas", "3", "--max-replicas", "2"])
    assert res.exit_code == 1 and "need 1 <= --min-replicas <= --max-replicas" in res.output


def test_ray_without_the_extra_says_how_to_install_it(monkeypatch):
    from click.testing import CliRunner

    import knowcache.server
    from knowcache.cli import main
    monkeypatch.setitem(sys.modules, "ray", None)          # as if not installed
    monkeypatch.delitem(sys.modules, "knowcache.server.ray_backend", raising=False)
    monkeypatch.delattr(knowcache.server, "ray_backend", raising=False)
    res = CliRunner().invoke(main, ["serve", "--models", str(MODELS), "--ray"])
    assert res.exit_code == 1
    assert "--ray needs Ray Serve: pip install 'knowcache[ray]'" in res.output


def samples(text: str, name: str) -> dict[str, float]:
    """``name``'s samples in Prometheus text: labels -> value."""
    return {line.split(" ")[0].removeprefix(name): float(line.split(" ")[-1])
            for line in text.splitlines() if line.startswith(name)}


@pytest.mark.slow
def test_the_serve_config_file_deploys_and_metrics_are_cluster_wide(ray_serve, tmp_path):
    """The file --serve-config writes passes Serve's schema and deploys through Serve's own
    builder path; with 2 ingress replicas, /metrics on either counts both."""
    from knowcache.server import ray_backend
    config = ServeConfig(models=MODELS, max_batch=4)
    scale = ray_backend.ScaleConfig(min_replicas=1, max_replicas=1, replica_cpus=0.2,
                                    ingress_replicas=2, ingress_cpus=0.1)
    path = tmp_path / "serve.yaml"
    ray_backend.write_serve_config(path, config, scale, "127.0.0.1", ray_serve.port)
    with ray_serve.running(None, serve_config=path) as url:
        x = np.zeros((1, 1, 28, 28), np.float32).tobytes()
        for _ in range(20):
            assert httpx.post(url + "/v1/vision/infer", content=x, headers=VISION,
                              timeout=20).status_code == 200
        time.sleep(2 * ray_backend.PUSH_EVERY_S)
        for _ in range(6):           # the proxy spreads scrapes over both replicas
            text = httpx.get(url + "/metrics", timeout=20).text
            requests = samples(text, "knowcache_requests_total")
            assert requests['{route="/v1/{task}/infer",status="200"}'] == 20, requests
            assert samples(text, "knowcache_batch_size_sum")[""] == 20


@pytest.mark.slow
def test_the_replicas_use_both_nodes_and_split_requests_get_404_with_a_sentence(ray_serve):
    """What the Ray tests run on: 2 Ray nodes, a task's 2 replicas placed on both. On
    that deployment, resuming a staged program (split computing's from_stage), which
    `knowcache serve` alone serves, is answered 404 (as for a task without a staged
    program) with what to do, before any body is read; a raw input is answered."""
    import ray
    from ray._private import state
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    x = np.zeros((1, 1, 28, 28), np.float32).tobytes()
    with ray_serve.running(ServeConfig(models=MODELS)) as url:
        names = {name for task in ("kws", "vision")
                 for name in replica_actors(ray_serve.last_app, f"model-{task}")}
        nodes = {a["Address"]["NodeID"] for a in state.actors().values()
                 if a["Name"] in names and a["State"] == "ALIVE"}
        assert len(names) == 4 and len(nodes) == 2, (names, nodes)

        r = httpx.post(url + "/v1/vision/infer?from_stage=1", content=b"\0" * 16, timeout=30,
                       headers={"X-Knowcache-Dtype": "int8", "X-Knowcache-Shape": "1,16",
                                "X-Knowcache-Scale": "0.1"})
        assert r.status_code == 404, r.text
        assert "send the raw input" in r.json()["detail"]
        assert httpx.post(url + "/v1/vision/infer", content=x, headers=VISION,
                          timeout=30).status_code == 200


@pytest.mark.slow
def test_a_task_whose_exit_learner_cannot_start_on_ray_says_why(ray_serve, tmp_path):
    """--learn-exits on Ray, on a folder whose full program this knowcache cannot read
    back into PyTorch (the tiny models' with a staged program): the task is served and
    GET /v1/kws/layer-cache's 404 says why its learner did not start, as without Ray
    (tests/test_split.py)."""
    from conftest import write_tiny_models
    from test_split import _write_staged
    root = tmp_path / "models"
    _write_staged(write_tiny_models(root / "kws"))
    with ray_serve.running(ServeConfig(models=root, learn_exits=True, batching=False)) as url:
        res = httpx.get(url + "/v1/kws/layer-cache", timeout=20)
        assert res.status_code == 404 and "its learner could not start (RecoveryError" in \
            res.json()["detail"], res.text
        assert httpx.get(url + "/v1/kws/manifest", timeout=20).status_code == 200


def learning_models(tmp_path: Path) -> Path:
    """A models folder of the shipped vision task alone (it has a staged program)."""
    root = tmp_path / "models"
    shutil.copytree(MODELS / "vision", root / "vision")
    return root


def staged_entry(doc: dict) -> dict:
    return next(p for p in doc["partitions"] if p["id"] == "staged")


def wait_for(url: str, done, what: str, timeout_s: float = 120) -> dict:
    """The layer-cache status once ``done(status)``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(url + "/v1/vision/layer-cache", timeout=20).json()
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s:g} s; last status: {status}")


def answer_all(url: str, xs: np.ndarray) -> list[dict]:
    """Answers to ``xs``, 4 requests at a time (spread over the replicas)."""
    async def go():
        async with httpx.AsyncClient(timeout=30) as c:
            async def one(x):
                r = await c.post(url + "/v1/vision/infer", content=x.tobytes(), headers=VISION)
                assert r.status_code == 200, r.text
                return r.json()
            out = []
            for i in range(0, len(xs), 4):
                out += await asyncio.gather(*(one(x) for x in xs[i:i + 4]))
            return out
    return asyncio.run(go())


def vision_inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 1, 28, 28)).astype(np.float32)


def learning(models: Path, **bars) -> ServeConfig:
    """The learner on ``models``, with bars a verified retrain always clears (any
    fidelity above 5%, any savings, no gain needed) unless ``bars`` say otherwise."""
    from knowcache.layer_cache.online import OnlineConfig
    online = OnlineConfig(**{"retrain_every": 40, "buffer": 200, "fidelity_floor": 0.05,
                             "savings_slack": 1.0, "min_gain": -1.0, "epochs": 5, **bars})
    return ServeConfig(models=models, learn_exits=True, online=online, batching=False)


@pytest.mark.slow
def test_the_exit_learner_on_ray_publishes_to_every_replica_once_and_rolls_back_everywhere(
        ray_serve, tmp_path):
    """Two replicas feed one learner. Each retrain that clears the bars is published once:
    manifest and staged file on disk, the manifest, bytes and ETag served, every replica
    swaps each version in exactly once, answers stay the full model's and carry the new
    version; a replica started later (a replacement) starts from the latest one. A
    retrain that fails verification (in an application of its own, whose retrain
    overlaps the other's start) leaves the manifest, the files and every replica on the
    serving version."""
    import ray

    from knowcache import _runtime
    from knowcache.server import ray_backend
    good, bad = learning_models(tmp_path / "good"), learning_models(tmp_path / "bad")
    full = _runtime.Partition.from_file(str(good / "vision" / "full.pte"))
    x = vision_inputs(81)
    bad_manifest = (bad / "vision" / "manifest.json").read_text()
    v0 = staged_entry(json.loads(bad_manifest))["version"]
    # No exported program is within a negative tolerance of its trained heads.
    failing = learning(bad, retrain_every=20, buffer=40, epochs=1, export_tolerance=-1.0)
    with ray_serve.running(failing) as bad_url:
        answer_all(bad_url, vision_inputs(20, seed=1))      # its retrain runs meanwhile
        with ray_serve.running(learning(good)) as url:
            status = wait_for(bad_url, lambda s: s["retrains"] == 1 and not s["retraining"],
                              "the failing retrain done")
            assert [(r["version"], r["outcome"]) for r in status["reports"]] == [
                (v0 + 1, "rolled_back")], status["reports"]
            assert "differ" in status["reports"][0]["reason"]
            time.sleep(3 * ray_backend.FLUSH_EVERY_S)      # the replicas' next reports
            status = httpx.get(bad_url + "/v1/vision/layer-cache").json()
            assert status["version"] == v0 and status["rollbacks"] == 1
            assert [(r["version"], r["swaps"]) for r in status["replicas"].values()] == [
                (v0, 0)] * 2, status["replicas"]
            assert (bad / "vision" / "manifest.json").read_text() == bad_manifest
            assert httpx.get(bad_url + "/v1/vision/manifest").text == bad_manifest
            assert [p.name for p in (bad / "vision").glob("staged*.pte")] == [
                f"staged.v{v0}.pte"]

            doc0 = httpx.get(url + "/v1/vision/manifest").json()
            etag0 = httpx.get(url + "/v1/vision/partitions/staged").headers["etag"]
            for k, window in ((1, x[:40]), (2, x[40:80])):   # one retrain after each window
                if k == 2:
                    # Both replicas fed the learner; one is killed: its replacement starts
                    # from the version published.
                    replicas = status["replicas"]
                    assert sorted(r["recorded"] > 0 for r in replicas.values()) == [True] * 2
                    assert sum(r["recorded"] for r in replicas.values()) == 40, replicas
                    killed = replica_actors(ray_serve.last_app, "model-vision")[0]
                    ray.kill(ray.get_actor(killed, namespace="serve"), no_restart=True)
                for xi, a in zip(window, answer_all(url, window)):
                    assert a["index"] == int(np.argmax(full.run(xi)))
                if k == 2:     # (a replacement that started stale would swap before reporting)
                    fresh = wait_for(url, lambda s: any(
                        r not in replicas and state["version"] > v0 and state["swaps"] == 0
                        for r, state in s["replicas"].items()),
                        "the replacement replica on a published version")["replicas"]
                    new, start = next((r, state["version"]) for r, state in fresh.items()
                                      if r not in replicas)
                wait_for(url, lambda s: s["retrains"] == k and not s["retraining"],
                         f"retrain {k} done")
                # Every replica and the ingress serve what was published before the next
                # window (the killed replica drops out of the status REPLICA_SEEN_S after).
                status = wait_for(url, lambda s: len(s["replicas"]) == 2 and all(
                    r["version"] == v0 + k for r in s["replicas"].values()),
                    f"both replicas on version {v0 + k}")
                deadline = time.monotonic() + 10
                while httpx.get(url + "/v1/vision/manifest").json()["version"] != \
                        doc0["version"] + k:
                    assert time.monotonic() < deadline, "the ingress kept the old manifest"
                    time.sleep(0.2)
            assert [(r["version"], r["outcome"]) for r in status["reports"]] == [
                (v0 + 1, "published"), (v0 + 2, "published")], [
                r["reason"] for r in status["reports"]]
            assert status["published"] == 2 and status["version"] == v0 + 2
            # Each replica swapped in each version after the one it started on once.
            swaps = {r: state["swaps"] for r, state in status["replicas"].items()}
            survivor = next(r for r in swaps if r != new)
            assert swaps == {survivor: 2, new: v0 + 2 - start}, status["replicas"]

            doc = httpx.get(url + "/v1/vision/manifest").json()
            assert doc["version"] == doc0["version"] + 2
            staged = staged_entry(doc)
            assert staged["file"] == f"staged.v{v0 + 2}.pte"
            task = good / "vision"
            assert json.loads((task / "manifest.json").read_text()) == doc
            assert [p.name for p in task.glob("staged*.pte")] == [staged["file"]]
            blob = httpx.get(url + "/v1/vision/partitions/staged",
                             headers={"If-None-Match": etag0})
            assert blob.status_code == 200
            assert blob.content == (task / staged["file"]).read_bytes()
            assert blob.headers["etag"] == f'"{staged["sha256"]}"' != etag0
            for a in answer_all(url, x[80:]):
                assert a["model_version"] == doc0["version"] + 2
                assert a["index"] == int(np.argmax(full.run(x[80])))


def test_the_serve_config_file_carries_the_learner_settings(tmp_path):
    """--serve-config with --learn-exits: the file's args rebuild the same settings."""
    pytest.importorskip("ray.serve", reason="needs the knowcache[ray] extra")
    import yaml

    from knowcache.layer_cache.online import OnlineConfig
    from knowcache.server import ray_backend
    key = tmp_path / "key.pem"
    online = OnlineConfig(retrain_every=60, min_gain=-1.0, signing_key=key)
    config = ServeConfig(models=MODELS, learn_exits=True, online=online)
    scale = ray_backend.ScaleConfig()
    path = tmp_path / "serve.yaml"
    ray_backend.write_serve_config(path, config, scale, "127.0.0.1", 8000)
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    assert args["learn_exits"] is True and args["online"]["signing_key"] == str(key)
    again, _ = ray_backend._split(args)
    assert again.learn_exits and again.online == online


def test_replicas_are_sized_to_the_cluster_or_refused_before_serve_waits_forever():
    from knowcache.server import ray_backend
    scale = ray_backend.ScaleConfig()                       # 1 CPU per replica by default
    fitted, said = ray_backend.fit_to_cluster(scale, 3, 2.0, chosen=False, local=True)
    assert fitted.replica_cpus == 0.66 and "3 CPUs, but the Ray cluster has 2 free" in said
    same, said = ray_backend.fit_to_cluster(scale, 2, 2.0, chosen=False, local=True)
    assert same == scale and said is None
    with pytest.raises(ValueError, match=r"--replica-cpus 0\.66 or less"):
        ray_backend.fit_to_cluster(scale, 3, 2.0, chosen=True, local=True)
    kept, said = ray_backend.fit_to_cluster(scale, 3, 2.0, chosen=True, local=False)
    assert kept == scale and said.startswith("warning:")    # a joined cluster may grow
    two = ray_backend.ScaleConfig(min_replicas=2, max_replicas=2, ingress_cpus=0.5)
    fitted, _ = ray_backend.fit_to_cluster(two, 3, 2.0, chosen=False, local=True)
    assert fitted.replica_cpus == 0.25                      # (2 - 0.5) / 6
