"""The client's address: the peer, or what a trusted proxy says in X-Forwarded-For.

X-Forwarded-For is a list each proxy appends the address it saw to. Anyone can send one, so
it is believed only when the peer is in `trusted_proxies`, and then only from the right:
walking leftwards over trusted hops, the first address not trusted is the client (entries
further left were written by the client itself and prove nothing).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """'10.0.0.1', '10.0.0.0/8', '::1' → networks; ValueError names a bad entry."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


@functools.lru_cache(maxsize=4096)  # a handful of proxies and the busiest clients: parsing is most of the cost
def _trusted(address: str, networks: tuple[Network, ...]) -> bool | None:
    """Whether `address` is in `networks`; None when it is not an IP address at all."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return any(ip in network for network in networks)


def client_address(request: web.Request) -> str | None:
    peer = request.remote
    networks: tuple[Network, ...] = request.app.get(TRUSTED_PROXIES, ())
    if peer is None or not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", ()) for hop in header.split(",")]
    client = peer
    for hop in reversed(hops):
        trusted = _trusted(hop, networks)
        if trusted is None:  # garbage the client sent: the last trusted hop is all we know
            return client
        client = hop
        if not trusted:
            return hop
    return client
