"""`knowcache serve --ray` beyond the shared HTTP tests (tests/test_serve_ray_http.py):
a model replica killed under load is replaced while every request is answered or
cleanly refused; the CLI's Ray options; Ray not installed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from knowcache.server import ServeConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
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
                                    "--learn-exits"])
    assert res.exit_code == 1 and "--learn-exits is not available with --ray yet" in res.output
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


def test_the_session_cluster_has_two_nodes_and_the_replicas_use_both(ray_serve):
    """What the Ray tests run on: 2 Ray nodes, a task's 2 replicas placed on both."""
    import ray
    from ray._private import state
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    with ray_serve.running(ServeConfig(models=MODELS)):
        names = {name for task in ("kws", "vision")
                 for name in replica_actors(ray_serve.last_app, f"model-{task}")}
        nodes = {a["Address"]["NodeID"] for a in state.actors().values()
                 if a["Name"] in names and a["State"] == "ALIVE"}
        assert len(names) == 4 and len(nodes) == 2, (names, nodes)


@pytest.mark.slow
def test_split_requests_get_404_with_a_sentence_on_ray(ray_serve):
    """Resuming a staged program (split computing's from_stage) is served by
    `knowcache serve` alone: Ray answers 404 (as for a task without a staged
    program) and says what to do, before any body is read; a raw input on the same
    deployment is answered."""
    x = np.zeros((1, 1, 28, 28), np.float32).tobytes()
    with ray_serve.running(ServeConfig(models=MODELS)) as url:
        r = httpx.post(url + "/v1/vision/infer?from_stage=1", content=b"\0" * 16, timeout=30,
                       headers={"X-Knowcache-Dtype": "int8", "X-Knowcache-Shape": "1,16",
                                "X-Knowcache-Scale": "0.1"})
        assert r.status_code == 404, r.text
        assert "send the raw input" in r.json()["detail"]
        assert httpx.post(url + "/v1/vision/infer", content=x, headers=VISION,
                          timeout=30).status_code == 200
