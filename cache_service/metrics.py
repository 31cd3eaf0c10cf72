"""Prometheus metrics, one registry per app (several nodes can share a test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        return generate_latest(self.registry)
