"""The metrics of DESIGN.md; the names are a contract read by dashboards and the benchmark."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the scrape size

SERVER_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One registry per app, so several servers can live in one test process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "livecomments_"
        self.connections = Gauge(p + "connections", "open SSE viewer connections", registry=r)
        self.watched_videos = Gauge(p + "watched_videos", "videos with at least one local viewer", registry=r)
        self.subscriptions = Gauge(p + "subscriptions", "broker channels this process is subscribed to", registry=r)
        self.stored = Counter(p + "comments_stored", "comments accepted and stored", registry=r)
        self.received = Counter(p + "broker_messages_received", "comments that reached this realtime process", registry=r)
        self.received_bytes = Counter(p + "broker_bytes_received", "bytes of comments that reached this process", registry=r)
        self.discarded = Counter(p + "comments_discarded", "received comments dropped for want of a local viewer", registry=r)
        self.delivered = Counter(p + "comments_delivered", "comment events written to viewers", registry=r)
        self.gaps_repaired = Counter(p + "gaps_repaired", "comments read from storage to fill a seq gap", registry=r)
        self.slow_disconnects = Counter(p + "slow_viewers_disconnected", "viewers cut for not keeping up", registry=r)
        self.pushes = Counter(p + "dispatch_pushes", "dispatcher pushes sent", registry=r)
        self.push_failures = Counter(p + "dispatch_push_failures", "dispatcher pushes failed", registry=r)
        self.registry_lookups = Counter(p + "registry_lookups", "dispatcher route cache misses read from the registry",
                                        registry=r)
        self.registry_cache_hits = Counter(p + "registry_cache_hits", "dispatcher publishes routed from the cache",
                                           registry=r)
        self.servers_per_video = Histogram(
            p + "dispatch_servers_per_video", "realtime servers a published comment was pushed to",
            buckets=SERVER_BUCKETS, registry=r,
        )
        self.latency = Histogram(
            p + "delivery_latency_seconds", "comment created_at to written to a viewer",
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
