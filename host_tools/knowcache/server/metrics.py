"""Prometheus metrics of one server instance (its own registry, so several apps
can live in one process, as in tests), and several instances' merged into one
(the Ray back end's replicas: ``merge``)."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


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


def merge(snapshots: Iterable[list[Metric]]) -> list[Metric]:
    """Several servers' metrics (``list(registry.collect())`` each) as one: every
    sample summed over the servers by name and labels (counters, histogram buckets,
    sums and counts, the queue-depth gauge), except ``*_created``, the earliest."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple, float]] = {}
    for snapshot in snapshots:
        for family in snapshot:
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type,
                                               family.unit)
                values[family.name] = {}
            merged = values[family.name]
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key not in merged:
                    merged[key] = s.value
                elif s.name.endswith("_created"):
                    merged[key] = min(merged[key], s.value)
                else:
                    merged[key] += s.value
    for name, family in families.items():
        for (sample, labels), value in values[name].items():
            family.add_sample(sample, dict(labels), value)
    return list(families.values())


def exposition(families: list[Metric]) -> bytes:
    """The Prometheus text of ``families`` (e.g. ``merge``'s)."""
    class Families(Collector):
        def collect(self):
            return families
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    return generate_latest(registry)
