"""The client's address: the peer, or what a trusted proxy says in X-Forwarded-For.

X-Forwarded-For is a list each proxy appends the address it saw to. Anyone can send one, so
it is believed only when the peer is in `trusted_proxies`, and then only from the right:
walking leftwards over trusted hops, the first address not trusted is the client (entries
further left were written by the client itself and prove nothing).
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from livecomments.addresses import Network, address_key
from livecomments.edge.keys import CONFIG

TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


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


def client_key(request: web.Request) -> str | None:
    """What an anonymous client is limited under (rate limits, slow mode): its address's
    canonical key, an IPv6 client's whole network of `ipv6_prefix` bits (livecomments/addresses.py)."""
    address = client_address(request)
    return None if address is None else address_key(address, request.app[CONFIG].ipv6_prefix)
