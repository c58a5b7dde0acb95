"""The server's dynamic batcher (knowcache.server.batcher) on its own, with run
functions whose answers the tests know beforehand, then through the real server:
batches of more than one request form, each caller gets the answer to its own
input, a request that timed out while queued never runs, and an exception
reaches only the request that raised it."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.special import softmax

from knowcache.data import images
from knowcache.runtime import Partition
from knowcache.server import ServeConfig
from knowcache.server.batcher import DynamicBatcher, QueueFull
from test_server import headers, running

MODELS = Path(__file__).resolve().parent.parent / "models"


class Recorder:
    """A run function whose answer to x is 3 x + 1, recording what ran and where."""

    def __init__(self, fail_on: float | None = None, gate: threading.Event | None = None):
        self.ran: list[float] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, x: np.ndarray) -> float:
        if self.gate is not None:
            self.gate.wait(10)
        self.ran.append(float(x[0]))
        self.threads.add(threading.current_thread().name)
        if float(x[0]) == self.fail_on:
            raise ValueError(f"cannot answer {float(x[0]):g}")
        return 3 * float(x[0]) + 1


def batcher(sizes: list[int], **kw) -> DynamicBatcher:
    args = dict(batching=True, max_batch=8, max_wait_ms=50, queue_limit=64)
    return DynamicBatcher(**{**args, **kw}, on_batch=sizes.append)


def test_queued_requests_run_in_batches_and_each_caller_gets_its_own_answer():
    sizes: list[int] = []
    run = Recorder()

    async def main():
        b = batcher(sizes)
        b.start()
        # 20 requests queued before the worker looks: batches of 8, 8 and 4.
        futures = [b.submit(run, np.array([float(i)])) for i in range(20)]
        answers = await asyncio.gather(*futures)
        await b.stop()
        return answers
    answers = asyncio.run(main())
    assert answers == [3 * i + 1 for i in range(20)]
    assert sizes == [8, 8, 4]
    assert run.ran == [float(i) for i in range(20)]          # in arrival order
    assert run.threads == {"knowcache-model_0"}              # never on the event loop


def test_a_request_waits_up_to_max_wait_for_company():
    sizes: list[int] = []
    run = Recorder()

    async def main():
        b = batcher(sizes, max_wait_ms=500)
        b.start()
        first = b.submit(run, np.array([1.0]))
        await asyncio.sleep(0.05)           # well inside the first one's wait
        second = b.submit(run, np.array([2.0]))
        answers = await asyncio.gather(first, second)
        await b.stop()
        return answers
    assert asyncio.run(main()) == [4, 7]
    assert sizes == [2]


def test_without_batching_every_request_runs_alone():
    sizes: list[int] = []
    run = Recorder()

    async def main():
        b = batcher(sizes, batching=False)
        b.start()
        answers = await asyncio.gather(*[b.submit(run, np.array([float(i)])) for i in range(5)])
        await b.stop()
        return answers
    assert asyncio.run(main()) == [1, 4, 7, 10, 13]
    assert sizes == [1] * 5


def test_a_request_that_timed_out_in_the_queue_never_runs():
    sizes: list[int] = []
    gate = threading.Event()
    run = Recorder(gate=gate)

    async def main():
        b = batcher(sizes, max_batch=4, max_wait_ms=0)
        b.start()
        busy = b.submit(run, np.array([1.0]))      # holds the compute thread until the gate opens
        await asyncio.sleep(0.05)
        late = b.submit(run, np.array([2.0]))
        waiting = b.submit(run, np.array([3.0]))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(late, 0.05)     # what the server does (504); cancels it
        gate.set()
        answers = await asyncio.gather(busy, waiting)
        await b.stop()
        return late, answers
    late, answers = asyncio.run(main())
    assert late.cancelled()
    assert answers == [4, 10]
    assert run.ran == [1.0, 3.0]                  # 2 was dropped, not run
    assert sizes == [1, 1]                        # and not counted in its batch


def test_an_exception_reaches_only_the_request_that_raised_it():
    sizes: list[int] = []
    run = Recorder(fail_on=2.0)

    async def main():
        b = batcher(sizes)
        b.start()
        answers = await asyncio.gather(*[b.submit(run, np.array([float(i)])) for i in range(5)],
                                       return_exceptions=True)
        after = await b.submit(run, np.array([7.0]))    # the worker is still serving
        await b.stop()
        return answers, after
    answers, after = asyncio.run(main())
    assert sizes == [5, 1]
    assert [a for i, a in enumerate(answers) if i != 2] == [1, 4, 10, 13]
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "cannot answer 2"
    assert after == 22


def test_a_full_queue_refuses_at_once():
    run = Recorder()

    async def main():
        b = batcher([], queue_limit=2)
        b.start()
        queued = [b.submit(run, np.array([float(i)])) for i in range(2)]
        with pytest.raises(QueueFull):
            b.submit(run, np.array([9.0]))
        answers = await asyncio.gather(*queued)
        again = await b.submit(run, np.array([9.0]))   # room again once the queue drained
        await b.stop()
        return answers, again
    assert asyncio.run(main()) == ([1, 4], 28)
    assert run.ran == [0.0, 1.0, 9.0]            # the refused one never ran


def test_the_server_batches_concurrent_requests_and_answers_each_its_own():
    """24 different images at once through `knowcache serve`; each answer is the
    full program's own answer for that image (run here, directly), so answers
    handed to the wrong request would show in the label or the confidence."""
    data = images.fashion_mnist().test
    x = data.x[:24].astype(np.float32) / 255.0
    full = Partition.from_file(str(MODELS / "vision" / "full.pte"))
    want = []
    for xi in x:
        p = softmax(full.run(xi[None]).reshape(-1).astype(np.float64))
        want.append((int(p.argmax()), float(p.max())))
    assert len({w[0] for w in want}) > 3 and len({round(w[1], 6) for w in want}) == 24

    with running(ServeConfig(models=MODELS, max_batch=64, max_wait_ms=300)) as url:
        def batch_metric(name: str) -> float:
            text = httpx.get(url + "/metrics").text
            return float(re.search(rf"^knowcache_batch_size_{name} (\S+)$", text, re.M)[1])
        runs0, requests0 = batch_metric("count"), batch_metric("sum")

        async def burst():
            async with httpx.AsyncClient(timeout=60) as c:
                return await asyncio.gather(*[
                    c.post(url + "/v1/vision/infer", content=xi[None].tobytes(),
                           headers=headers(token=None)) for xi in x])
        results = asyncio.run(burst())
        runs, requests = batch_metric("count") - runs0, batch_metric("sum") - requests0
    assert [r.status_code for r in results] == [200] * 24
    got = [(r.json()["index"], r.json()["confidence"]) for r in results]
    for (index, confidence), (want_index, want_confidence) in zip(got, want):
        assert index == want_index
        assert confidence == pytest.approx(want_confidence, abs=1e-5)
    assert requests == 24 and runs < 24          # some batch held more than one request
