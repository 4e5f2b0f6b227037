"""The metrics of docs/api.md; the names are a contract read by dashboards and the benchmark."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from livecomments import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the scrape size

SERVER_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
# Label values come from fixed sets only, so a client cannot grow the series count: the route is
# the route's template (or "unmatched"), the method one of these (else "other"), and a rejection
# code one of these (else "other"). A new ApiError code of the POST path belongs here.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REJECTION_CODES = frozenset({
    "author_empty", "author_too_long", "bad_request", "banned", "body_timeout", "body_too_large", "client_gone",
    "idempotency_key_reused", "internal", "invalid_author", "invalid_body", "invalid_idempotency_key",
    "invalid_json", "invalid_text", "invalid_video_id", "method_not_allowed", "overloaded", "rate_limit_unavailable",
    "rate_limited", "slow_mode",
    "storage_unavailable", "text_empty", "text_too_long", "too_many_requests", "unauthorized", "unavailable",
    "unsupported_media_type",
})


class Metrics:
    """One registry per app, so several servers can live in one test process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "livecomments_"
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds…
        Gauge(p + "build_info", "always 1; the version is the label", ["version"], registry=r).labels(__version__).set(1)
        self.http_requests = Counter(p + "http_requests", "HTTP requests answered, by route template, method, status",
                                     ["route", "method", "status"], registry=r)
        self.post_latency = Histogram(p + "comment_post_seconds", "POST of a comment: request in to response out",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter(p + "comments_rejected", "comment posts refused, by error code", ["code"], registry=r)
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
        self.storage_commit_seconds = Histogram(
            p + "storage_commit_seconds", "one group-commit transaction, begin to commit",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.storage_batch_size = Histogram(
            p + "storage_batch_size", "posts committed together in one transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.rate_limit_errors = Counter(
            p + "rate_limit_store_errors", "rate-limit checks that could not reach Redis, by what the post got "
            "(allowed: rate_limit_fail_open, else refused)", ["outcome"], registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_labeled(label: str, expositions: dict[str, bytes]) -> bytes:
    """Several processes' /metrics as one: every series gets label=<its process>, each family once
    (a scraper refuses a family repeated, so the texts cannot simply be concatenated)."""
    families: dict[str, Metric] = {}
    for value, text in expositions.items():
        for family in text_string_to_metric_families(text.decode()):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            merged.samples += [sample._replace(labels={**sample.labels, label: value}) for sample in family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
