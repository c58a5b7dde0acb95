"""One locust load run against a running `knowcache serve` (own process: locust
monkey-patches sockets with gevent). Prints one JSON line of figures.

    python -m knowcache.bench.load_client --url URL --task vision --users 8 --seconds 10
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402

import gevent  # noqa: E402
import numpy as np  # noqa: E402
from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

AUDIO_RANGE = (-0.1, 0.1)       # quiet noise, for audio tasks (no value_range stated)


def task_input(url: str, task: str, token: str | None) -> tuple[list[int], str, tuple]:
    """(shape, dtype, value range) of the task's full model, from the served manifest:
    any task the server serves can be loaded, as a device would learn it."""
    import httpx
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{url}/v1/{task}/manifest", headers=auth, timeout=30)
    if r.status_code != 200:
        raise SystemExit(f"GET /v1/{task}/manifest: HTTP {r.status_code} {r.text[:300]}")
    full = next(p for p in r.json()["partitions"] if p["role"] == "full")
    spec = full["input"]
    default = AUDIO_RANGE if spec.get("sample_rate") else (0.0, 1.0)
    return spec["shape"], spec["dtype"], tuple(spec.get("value_range") or default)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--task", default="vision", help="any task the server serves")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--token", default=None)
    args = p.parse_args()

    shape, dtype, (low, high) = task_input(args.url, args.task, args.token)
    rng = np.random.default_rng(0)
    bodies = [rng.uniform(low, high, shape).astype(dtype).tobytes() for _ in range(16)]
    headers = {"X-Knowcache-Dtype": dtype, "X-Knowcache-Shape": ",".join(map(str, shape)),
               "Content-Type": "application/octet-stream"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    path = f"/v1/{args.task}/infer"

    class Device(FastHttpUser):
        host = args.url
        wait_time = constant(0)

        @task
        def infer(self):
            body = bodies[int(rng.integers(len(bodies)))]
            with self.client.post(path, data=body, headers=headers, catch_response=True) as r:
                if r.status_code == 429 and not r.headers.get("Retry-After"):
                    r.failure("HTTP 429 without Retry-After")
                elif r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")

    env = Environment(user_classes=[Device], events=events)
    runner = env.create_local_runner()

    def stop_when_enough():
        while env.stats.total.num_requests < args.max_requests:
            gevent.sleep(0.05)
        runner.quit()

    runner.start(args.users, spawn_rate=args.users)
    gevent.spawn(stop_when_enough)
    gevent.spawn_later(args.seconds, runner.quit)
    runner.greenlet.join()
    s = env.stats.total
    elapsed = max(s.last_request_timestamp - s.start_time, 1e-9) if s.num_requests else 0.0
    print(json.dumps({
        "users": args.users, "requests": s.num_requests, "failures": s.num_failures,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(s.num_requests / elapsed, 1) if elapsed else 0.0,
        "p50_ms": s.get_response_time_percentile(0.5),
        "p99_ms": s.get_response_time_percentile(0.99),
        "errors": {str(v.error): v.occurrences for v in env.stats.errors.values()},
    }))


if __name__ == "__main__":
    main()
