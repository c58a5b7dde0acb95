"""Dynamic batching of concurrent infer requests, with a bounded queue.

Requests wait at most ``max_wait_ms`` for company and run together, up to
``max_batch``, in one hand-off to the compute thread (the event loop never
runs a model). Without batching every request is its own hand-off. A full
queue refuses new work at once (the caller answers 429 with Retry-After)
rather than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Callable

import numpy as np


class QueueFull(Exception):
    """The model's queue is full: answered 429 with Retry-After."""


class Unavailable(Exception):
    """No model can take the request now (a replica went away): answered 503 with
    Retry-After and this sentence."""


@dataclass
class _Item:
    run: Callable[[np.ndarray], object]
    x: np.ndarray
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, *, batching: bool, max_batch: int, max_wait_ms: float, queue_limit: int,
                 on_batch: Callable[[int], None] = lambda n: None):
        self.batching = batching
        self.max_batch = max_batch if batching else 1
        self.max_wait = max_wait_ms / 1000.0
        self.queue_limit = queue_limit
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        # One compute thread: the model's own thread pool uses the cores.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix="knowcache-model")

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, run: Callable[[np.ndarray], object], x: np.ndarray) -> asyncio.Future:
        """Queues one input; the future resolves to run(x). Raises QueueFull."""
        assert self._queue is not None, "batcher not started"
        if self._queue.qsize() >= self.queue_limit:
            raise QueueFull()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(run, x, future))
        return future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.max_batch > 1:
                deadline = loop.time() + self.max_wait
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._queue.get_nowait())
                        continue
                    except asyncio.QueueEmpty:
                        pass
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                    except asyncio.TimeoutError:
                        break
            live = [item for item in batch if not item.future.done()]   # drop timed-out ones
            if not live:
                continue
            self.on_batch(len(live))
            results = await loop.run_in_executor(self._pool, run_each,
                                                 [(item.run, item.x) for item in live])
            for item, (ok, value) in zip(live, results):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)


def run_each(calls: list[tuple[Callable[[np.ndarray], object], np.ndarray]]
             ) -> list[tuple[bool, object]]:
    """(True, run(x)) or (False, the exception) per (run, x): one input's failure is
    handed back to the request that caused it, not to its whole batch."""
    out = []
    for run, x in calls:
        try:
            out.append((True, run(x)))
        except Exception as e:  # noqa: BLE001 - handed back to the request that caused it
            out.append((False, e))
    return out
