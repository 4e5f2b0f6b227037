"""Admission of SSE streams: a cap per process and per client address.

Why: every open stream holds a file descriptor, and nothing else bounds how many an anonymous
client opens. At the fd limit (`ulimit -n`) accept() fails for every connection, so /healthz,
POSTs and the metrics scrape go unanswered. Streams are therefore capped below that limit:

- `max_streams` (default 10,000) per process. With the connection cap (server.py) it is
  lowered at start, saying so in one line, to leave FD_HEADROOM descriptors (1,024, at most a
  quarter of the limit) free under the soft open files limit, which `livecomments serve`
  first raises to the hard one (server.py; systemd hands services 1,024 soft and 524,288
  hard): room for storage, the broker, the registry, the listeners and refused connections.
  When both caps do not fit in the rest, they share it in the proportion configured (see
  `fit_caps`). 10,000 viewers is what one process fans out to well within the latency
  target (benchmarks/results/fanout.md); more belong on more processes.
- `max_streams_per_address` (default 100; 0 = no cap). A browser opens at most 6 HTTP/1.1
  connections per origin, so 100 covers a household or an office behind one NAT many times
  over, while one client cannot take a process's streams. Loopback peers are not capped per
  address: on loopback sit the local proxy (`livecomments cluster`'s nginx), through which
  every viewer arrives, and load generators. Behind a remote proxy every viewer has the
  proxy's address: set `max_streams_per_address = 0` there until the cap uses a trusted
  proxy's X-Forwarded-For.

A refused stream (`too_many_streams`) is answered by what will make its client come back
later, not never: a browser's EventSource gives up for good on any status but 200 (readyState
CLOSED), and DESIGN.md has a viewer never answered with something EventSource will not retry.
So a request that accepts `text/event-stream` (every EventSource sends that) gets 200 with a
long, jittered `retry:` (BUSY_RETRY_MS, so refused viewers do not come back in one wave), an
in-band `event: error` carrying the JSON error shape, and the end of the stream: EventSource
fires `error`, waits `retry` and reconnects, by then maybe through a balancer to a process with
room. Any other client (curl, probes, scripts) gets the plain 503 in the JSON error shape. Both
carry `Retry-After`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import resource
from collections.abc import Callable
from dataclasses import dataclass

from livecomments.addresses import address_key
from livecomments.config import Config
from livecomments.core.viewer import Viewer

log = logging.getLogger(__name__)

FD_HEADROOM = 1024  # descriptors kept free of streams and connections (at most a quarter of the limit)
DEFAULT_CONNECTIONS = 4096  # what max_connections 0 ("no cap") asks for at least
REFUSING_UNLIMITED = 1024  # refused connections lingering at once, when the open files are unlimited
BUSY_RETRY_MS = (20_000, 40_000)  # what a refused EventSource waits before it tries again


def busy_retry_ms() -> int:
    return random.randint(*BUSY_RETRY_MS)


def capped_address(host: str | None) -> str | None:
    """The address a stream counts against, or None when no per-address cap applies (loopback)."""
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:  # a Unix socket's peer: no address
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_loopback else str(ip)


def cap_key(host: str | None, ipv6_prefix: int) -> str | None:
    """What a connection from host counts against under a per-address cap: None for loopback (not
    capped), else the key rate limits count it under, an IPv6 client as its network (addresses.py)."""
    address = capped_address(host)
    return None if address is None else address_key(address, ipv6_prefix)


@dataclass(frozen=True)
class FdCaps:
    """The caps on what holds a descriptor, as they fit the open files limit."""

    streams: int  # open SSE streams per process
    connections: int  # connections aiohttp handles at once, per listener
    refusing: int  # connections answered 503 and lingering (server.py), per listener
    soft: int  # the open files limit they were fitted to (0: unlimited)
    headroom: int  # descriptors left to everything else


def fit_caps(max_streams: int, max_connections: int, listeners: int, soft: int) -> FdCaps:
    """Caps that leave the headroom free under a soft limit of `soft` descriptors.

    Streams and connections share what is left; a stream in its catch-up counts in both,
    so they are not let to add up past it. Over it, each gets its configured share of it.
    `max_connections` 0 ("no cap") asks for what the streams leave, at least DEFAULT_CONNECTIONS.
    """
    if soft <= 0:
        return FdCaps(max_streams, max_connections, REFUSING_UNLIMITED, 0, 0)
    headroom = min(FD_HEADROOM, soft // 4)
    budget = max(1 + listeners, soft - headroom)
    want = max_connections or max(budget - max_streams, DEFAULT_CONNECTIONS)
    if max_streams + listeners * want <= budget:
        streams, connections = max_streams, want
    else:
        connections = max(1, budget * want // (max_streams + listeners * want))
        streams = max(1, min(max_streams, budget - listeners * connections))
    return FdCaps(streams, connections, max(1, headroom // (4 * listeners)), soft, headroom)


@functools.cache
def _fitted(max_streams: int, max_connections: int, listeners: int) -> FdCaps:
    """Cached: one process fits its caps once, and says so once (its listeners ask alike)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    caps = fit_caps(max_streams, max_connections, listeners, 0 if soft == resource.RLIM_INFINITY else soft)
    if (caps.streams, caps.connections) != (max_streams, max_connections):
        log.warning("caps fitted to the open files limit (ulimit -n %d): max_streams %d -> %d, max_connections "
                    "%d -> %d%s; %d descriptors kept for storage, the broker, the listeners and health checks",
                    caps.soft, max_streams, caps.streams, max_connections, caps.connections,
                    " per listener" if listeners > 1 else "", caps.headroom)
    return caps


def fitted_caps(config: Config) -> FdCaps:
    """The caps of config fitted to this process's open files limit (raise it first)."""
    # Pushes arrive on a listener of their own when internal_port is set (app.serve sets it then).
    listeners = 2 if config.internal_port and config.strategy == "dispatcher" and config.serves_realtime else 1
    return _fitted(config.max_streams, config.max_connections, listeners)


class StreamGate:
    """Counts open streams from admission until they are gone, and refuses those past a cap.

    Every admitted viewer leaves exactly once through `leave` (the handler's paths before the
    stream goes live, then the Viewer's `gone` callback), which also takes it out of the hub.
    Called on the loop only; never awaits.
    """

    def __init__(self, hub_leave: Callable[[Viewer], None], *, max_streams: int, max_per_address: int) -> None:
        self._hub_leave = hub_leave
        self.counts = AddressCounts(max_streams, max_per_address)

    def admit(self, address: str | None) -> str | None:
        """Count a new stream from address; or, past a cap, count nothing and say why."""
        refused = self.counts.admit(address)
        if refused == "total":
            return f"this server holds its maximum of {self.counts.max_total} streams"
        if refused == "address":
            return f"{address} holds its maximum of {self.counts.max_per_address} streams"
        return None

    def leave(self, viewer: Viewer) -> None:
        self._hub_leave(viewer)
        self.counts.release(viewer.address)


class AddressCounts:
    """What is open in all and per client address, under two caps (0 = no cap): the stream
    gate's and the edge's connection counts. Past a cap nothing is counted."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._per_address: dict[str, int] = {}

    def admit(self, address: str | None) -> str | None:
        """None when counted; else which cap refused it: "total" or "address"."""
        if self.max_total and self.total >= self.max_total:
            return "total"
        if address is not None and self.max_per_address:
            n = self._per_address.get(address, 0)
            if n >= self.max_per_address:
                return "address"
            self._per_address[address] = n + 1
        self.total += 1
        return None

    def release(self, address: str | None) -> None:
        """Uncount what was admitted from address."""
        self.total -= 1
        if address is not None and self.max_per_address:
            n = self._per_address[address] - 1
            if n:
                self._per_address[address] = n
            else:
                del self._per_address[address]
