"""Prometheus metrics, one registry per app (several nodes can share a test process).

A node of several processes (`--processes N`) uses prometheus_client's multiprocess mode:
its parent gives every worker `PROMETHEUS_MULTIPROC_DIR`, a private directory where each
process keeps its values (prometheus_client reads the variable when it is imported), and
`/metrics`, whichever process answers it, sums every process's files."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROC_DIR", "Metrics"]

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._exported = self.registry
        if shared := os.environ.get(MULTIPROC_DIR):
            self._exported = CollectorRegistry()
            MultiProcessCollector(self._exported, path=shared)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "statecache_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "statecache_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.reencryptions = Counter(
            "statecache_reencryptions_total",
            "Capsule re-encryptions by result",
            ["result"],
            registry=self.registry,
        )
        self.auth_rejections = Counter(
            "statecache_auth_rejections_total",
            "Requests refused by authentication, by code",
            ["code"],
            registry=self.registry,
        )
        self.snapshots = Counter(
            "statecache_snapshots_published_total",
            "Published snapshots by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self._exported)
