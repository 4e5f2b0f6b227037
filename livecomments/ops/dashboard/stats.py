"""What the cluster dashboard shows, computed from the members' /metrics and the broker's INFO.

A rate is the delta of a counter between two scrapes over the time between them; the delivery
latency p99 is read from the histogram buckets' deltas over the same window (so it describes the
last second, not the process's whole life); waste is discarded ÷ received, per server over the
window and for the whole cluster from the counters themselves (what /metrics says, exactly).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

M = "livecomments_"
RECEIVED, DISCARDED = M + "broker_messages_received_total", M + "comments_discarded_total"
DELIVERED = M + "comments_delivered_total"
STORED, PUSHES = M + "comments_stored_total", M + "dispatch_pushes_total"
LATENCY_BUCKET = M + "delivery_latency_seconds_bucket"
# Redis: what crosses the broker (commandstats counts PUBLISH and the cluster's SPUBLISH).
PUBLISHES, CHANNELS, OUT_BYTES = "publishes", "pubsub_channels", "total_net_output_bytes"


@dataclass(frozen=True)
class Scrape:
    at: float  # time.monotonic() of the scrape
    values: dict[str, float]  # sample name -> value, a name's labelled series summed
    latency: tuple[tuple[float, float], ...] = ()  # (le, cumulative count), ascending le


def parse_scrape(text: str, at: float) -> Scrape:
    values: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LATENCY_BUCKET:
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            else:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return Scrape(at, values, tuple(sorted(buckets.items())))


def rate(cur: Scrape, prev: Scrape | None, name: str) -> float | None:
    """Per second between the two scrapes; None before there are two. A restart (counter went
    down) counts from zero."""
    if prev is None or cur.at <= prev.at:
        return None
    now, before = cur.values.get(name, 0.0), prev.values.get(name, 0.0)
    return (now - before if now >= before else now) / (cur.at - prev.at)


def p99_ms(cur: Scrape, prev: Scrape | None) -> tuple[float | None, bool]:
    """(upper bound of the bucket holding the 99th percentile, in ms; True when it is above the last
    finite bucket). None when nothing was delivered in the window."""
    if prev is None or not cur.latency:
        return None, False
    before = dict(prev.latency)
    deltas = [(le, count - before.get(le, 0.0)) for le, count in cur.latency]
    total = deltas[-1][1]
    if total <= 0:
        return None, False
    finite = [le for le, _ in deltas if math.isfinite(le)]
    for le, count in deltas:
        if count >= 0.99 * total:
            return (le * 1000, False) if math.isfinite(le) else (finite[-1] * 1000, True)
    return None, False


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


@dataclass(frozen=True)
class Topology:
    """What the dashboard watches: names and URLs of the cluster's members."""

    strategy: str
    policy: str
    partitions: int | None  # partitioned: channels (0 = one per video); None: the servers' default
    balancer: str  # the cluster's one URL
    servers: tuple[tuple[str, str], ...]  # (name, url) of each realtime server
    writers: tuple[tuple[str, str], ...]
    redis: str = ""  # redis:// of the broker (or the dispatcher's registry), "" when none we can read


@dataclass
class Monitor:
    """Scrapes every member once per poll and keeps the last two scrapes of each."""

    topology: Topology
    last: dict[str, Scrape] = field(default_factory=dict)
    previous: dict[str, Scrape] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)  # member -> why its last scrape failed

    async def poll(self, session: aiohttp.ClientSession) -> None:
        members = [*self.topology.servers, *self.topology.writers]
        results = await asyncio.gather(*(self._metrics(session, url) for _, url in members),
                                       self._redis(), return_exceptions=True)
        for (name, _), result in zip([*members, ("broker", "")], results, strict=True):
            if isinstance(result, BaseException):
                self.down[name] = f"{type(result).__name__}: {result}"[:200]
            elif result is not None:
                self.down.pop(name, None)
                if name in self.last:
                    self.previous[name] = self.last[name]
                self.last[name] = result

    async def _metrics(self, session: aiohttp.ClientSession, url: str) -> Scrape:
        async with session.get(url + "/metrics") as resp:
            resp.raise_for_status()
            text = await resp.text()
        return parse_scrape(text, time.monotonic())

    async def _redis(self) -> Scrape | None:
        if not self.topology.redis:
            return None
        import redis.asyncio as redis  # the cluster's redis-server needs the [redis] extra anyway

        client = redis.from_url(self.topology.redis, socket_timeout=2.0)
        try:
            stats, commands = await client.info("stats"), await client.info("commandstats")
        finally:
            await client.aclose()
        publishes = sum(float(commands.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("publish", "spublish"))
        values = {PUBLISHES: publishes, CHANNELS: float(stats.get(CHANNELS, 0)), OUT_BYTES: float(stats.get(OUT_BYTES, 0))}
        return Scrape(time.monotonic(), values)

    def state(self) -> dict[str, Any]:
        topo = self.topology
        servers = [self._server(name, url) for name, url in topo.servers]
        writers = [self._writer(name, url) for name, url in topo.writers]
        up = [s for s in servers if s["up"]]
        received = sum(s["received_total"] for s in up)
        discarded = sum(s["discarded_total"] for s in up)
        received_rate = _sum(s["received_per_s"] for s in up)
        discarded_rate = _sum(s["discarded_per_s"] for s in up)
        return {
            "strategy": topo.strategy, "policy": topo.policy, "partitions": topo.partitions,
            "balancer": topo.balancer, "demo": topo.balancer + "/demo/",
            "servers": servers, "writers": writers, "broker": self._broker(writers),
            "totals": {
                "connections": sum(s["connections"] for s in up),
                "received_per_s": received_rate, "delivered_per_s": _sum(s["delivered_per_s"] for s in up),
                "discarded_per_s": discarded_rate, "waste": _ratio(discarded_rate, received_rate),
                "stored_per_s": _sum(w["stored_per_s"] for w in writers if w["up"]),
                "received_total": received, "discarded_total": discarded,
                "delivered_total": sum(s["delivered_total"] for s in up),
                "waste_total": discarded / received if received else None,  # = the counters' ratio
            },
        }

    def _server(self, name: str, url: str) -> dict[str, Any]:
        cur, prev = self.last.get(name), self.previous.get(name)
        if cur is None or name in self.down:
            return {"name": name, "url": url, "up": False, "error": self.down.get(name, "not scraped yet")}
        received, discarded = rate(cur, prev, RECEIVED), rate(cur, prev, DISCARDED)
        p99, above = p99_ms(cur, prev)
        v = cur.values
        return {
            "name": name, "url": url, "up": True,
            "connections": v.get(M + "connections", 0.0), "watched_videos": v.get(M + "watched_videos", 0.0),
            "subscriptions": v.get(M + "subscriptions", 0.0),
            "received_per_s": received, "delivered_per_s": rate(cur, prev, DELIVERED), "discarded_per_s": discarded,
            "waste": _ratio(discarded, received), "p99_ms": p99, "p99_above": above,
            "received_total": v.get(RECEIVED, 0.0), "discarded_total": v.get(DISCARDED, 0.0),
            "delivered_total": v.get(DELIVERED, 0.0),
        }

    def _writer(self, name: str, url: str) -> dict[str, Any]:
        cur = self.last.get(name)
        if cur is None or name in self.down:
            return {"name": name, "url": url, "up": False, "error": self.down.get(name, "not scraped yet")}
        prev = self.previous.get(name)
        return {"name": name, "url": url, "up": True, "stored_per_s": rate(cur, prev, STORED),
                "stored_total": cur.values.get(STORED, 0.0), "pushes_per_s": rate(cur, prev, PUSHES)}

    def _broker(self, writers: list[dict[str, Any]]) -> dict[str, Any]:
        if self.topology.strategy == "dispatcher":  # no broker: writers push over HTTP
            return {"kind": "push", "pushes_per_s": _sum(w.get("pushes_per_s") for w in writers if w["up"])}
        cur = self.last.get("broker")
        if cur is None or "broker" in self.down:
            return {"kind": "redis" if self.topology.redis else "none", "up": False, "error": self.down.get("broker", "")}
        prev = self.previous.get("broker")
        out = rate(cur, prev, OUT_BYTES)
        return {"kind": "redis", "up": True, "publishes_per_s": rate(cur, prev, PUBLISHES),
                "channels": cur.values[CHANNELS], "out_kb_per_s": out / 1000 if out is not None else None}


def _sum(values: Any) -> float | None:
    """None when no member has a rate yet (the first scrape), else the sum of those that have."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None
