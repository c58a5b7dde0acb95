"""Prometheus metrics of one server instance (its own registry, so several apps
can live in one process, as in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("knowcache_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("knowcache_request_seconds", "Request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                          5, 10))
        self.batch_size = Histogram("knowcache_batch_size", "Infer requests run together",
                                    registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.queue_depth = Gauge("knowcache_queue_depth", "Infer requests waiting",
                                 registry=self.registry)
        self.downloads = Counter("knowcache_partition_downloads",
                                 "Partition downloads (200 answers) by task and partition",
                                 ["task", "partition"], registry=self.registry)
        self.not_modified = Counter("knowcache_partition_not_modified",
                                    "Partition requests answered 304", ["task", "partition"],
                                    registry=self.registry)
