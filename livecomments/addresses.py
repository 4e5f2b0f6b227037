"""IP addresses and networks: parsing shared by config validation and the edge, and the one
canonical key a client address is limited and counted under.

Why a key is not simply the text of an address: one client has many texts and, on IPv6, many
addresses. `10.8.8.8`, `::ffff:10.8.8.8` and `::ffff:a08:808` are one IPv4 client (a dual-stack
socket or a proxy writes the mapped forms); and an IPv6 subscriber is handed a whole /64 (often a
/56 or /48), from which it may pick 2^64 addresses at will. Keyed per /128, one host gets as many
buckets and stream allowances as it cares to use addresses. So IPv4 keys on the address and IPv6
on its network of `ipv6_prefix` bits (64 by default: RFC 6177's smallest end-site assignment, and
the prefix SLAAC hosts pick their addresses within).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_IPV6_PREFIX = 64


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """'10.0.0.1', '10.0.0.0/8', '::1' → networks; ValueError names a bad entry."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as a client or proxy wrote it, IPv4-mapped IPv6 as the IPv4 address it is,
    an IPv6 zone (`fe80::1%eth0`) dropped; None when `text` is no IP address."""
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def canonical(text: str) -> str | None:
    """One text per address (`::FFFF:a08:808` → `10.8.8.8`, `2001:DB8:0::1` → `2001:db8::1`); None if not one."""
    ip = parse_address(text)
    return None if ip is None else str(ip)


@functools.lru_cache(maxsize=4096)  # the busiest clients: parsing is most of the cost of a key
def address_key(text: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """What limits and caps count `text` under: the canonical IPv4 address, or the IPv6 address's
    network of `ipv6_prefix` bits (`2001:db8::/64`). Text that is no IP address (a Unix socket's
    peer) is its own key."""
    ip = parse_address(text)
    if ip is None:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
