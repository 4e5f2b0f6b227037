"""The metrics of docs/api.md; the names are a contract read by dashboards and the benchmark."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
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


class Tally(Collector):
    """A counter by label values, kept as plain ints and turned into a family at scrape time.

    For what every request counts: prometheus_client's labels(...).inc() takes a lock and looks
    its child up on each call (2 µs here); this is one dict update (0.3 µs). Updated and collected
    on the event loop only (the /metrics handler runs there), so it needs no lock."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self._name, self._documentation, self._labels = name, documentation, list(labels)
        self._counts: dict[tuple[str, ...], int] = {} if labels else {(): 0}  # unlabelled: 0 before any
        registry.register(self)

    def inc(self, *values: str) -> None:
        self._counts[values] = self._counts.get(values, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for values, count in self._counts.items():
            family.add_metric(values, count)
        yield family


class Amount(Collector):
    """An unlabelled counter as a plain number (see Tally), counted by any amount: what every comment
    a realtime process receives counts (messages, bytes, discarded). On the event loop only."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1) -> None:
        self._value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._value)


class PlainHistogram(Collector):
    """An unlabelled histogram as plain counts (see Tally): observe() is a bisect and two adds
    (0.15 µs, against prometheus_client's 1.3 µs). On the event loop only."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = [*buckets, float("inf")]
        self._les = [repr(float(b)) for b in buckets] + ["+Inf"]  # as prometheus_client writes them
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # le: a value on a bound counts in it
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative, buckets = 0, []
        for le, count in zip(self._les, self._counts, strict=True):
            cumulative += count
            buckets.append((le, float(cumulative)))
        family.add_metric([], buckets, self._sum)
        yield family


class Metrics:
    """One registry per app, so several servers can live in one test process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "livecomments_"
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds…
        Gauge(p + "build_info", "always 1; the version is the label", ["version"], registry=r).labels(__version__).set(1)
        # What every request, post or commit counts is a Tally or PlainHistogram: no lock, no child per call.
        self.http_requests = Tally(p + "http_requests", "HTTP requests answered, by route template, method, status",
                                   ["route", "method", "status"], r)
        self.post_latency = PlainHistogram(p + "comment_post_seconds", "POST of a comment: request in to response out",
                                           LATENCY_BUCKETS, r)
        self.rejected = Tally(p + "comments_rejected", "comment posts refused, by error code", ["code"], r)
        self.connections = Gauge(p + "connections", "open SSE viewer connections", registry=r)
        self.watched_videos = Gauge(p + "watched_videos", "videos with at least one local viewer", registry=r)
        self.subscriptions = Gauge(p + "subscriptions", "broker channels this process is subscribed to", registry=r)
        self.stored = Tally(p + "comments_stored", "comments accepted and stored", [], r)
        self.received = Amount(p + "broker_messages_received", "comments that reached this realtime process", r)
        self.received_bytes = Amount(p + "broker_bytes_received", "bytes of comments that reached this process", r)
        self.discarded = Amount(p + "comments_discarded", "received comments dropped for want of a local viewer", r)
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
        self.storage_commit_seconds = PlainHistogram(
            p + "storage_commit_seconds", "one group-commit transaction, begin to commit", LATENCY_BUCKETS, r,
        )
        self.storage_batch_size = PlainHistogram(
            p + "storage_batch_size", "posts committed together in one transaction", (1, 2, 4, 8, 16, 32, 64, 128, 256), r,
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
