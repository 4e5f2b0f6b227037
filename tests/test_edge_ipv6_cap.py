"""The per-address connection cap counts an IPv6 client as its network (issue 23 item 4), as rate
limits and the stream cap do: one subscriber picks addresses at will within its prefix.

Through a real `livecomments serve` and the kernel's own peer addresses. A test host seldom has two
addresses in one /64, so the test takes two of its non-loopback IPv6 addresses, finds how many
leading bits they share, and sets `ipv6_prefix` to that: at that prefix they are one client, at
/128 two. The arithmetic of the key at /64 itself is test_ratelimit.py's test_address_keys.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import orjson
import pytest

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def ipv6_sources() -> list[str]:
    """This host's non-loopback IPv6 addresses (a link-local one with its interface as the zone)."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6:
            continue
        ip = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        if not ip.is_loopback:
            found.append(f"{ip}%{fields[5]}" if ip.is_link_local else str(ip))
    return found


def shared_bits(a: str, b: str) -> int:
    x, y = (int(ipaddress.IPv6Address(t.split("%", 1)[0])) for t in (a, b))
    return 128 - (x ^ y).bit_length()


async def request(source: str, port: int) -> bytes:
    """GET /healthz from `source` to the same address (a local one: the kernel delivers it here)."""
    reader, writer = await asyncio.open_connection(source, port, local_addr=(source, 0))
    try:
        writer.write(HEALTHZ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        async with asyncio.timeout(5):
            return await reader.read()  # to the end: the server closes after its answer, 200 or 503
    finally:
        writer.close()


async def test_the_connection_cap_counts_an_ipv6_client_per_network(spawn: Any) -> None:
    sources = ipv6_sources()
    pairs = [(a, b) for i, a in enumerate(sources) for b in sources[i + 1:] if shared_bits(a, b) >= 1]
    if not pairs:
        pytest.skip(f"needs two non-loopback IPv6 addresses sharing a prefix; this host has {sources}")
    a, b = pairs[0]
    shared = shared_bits(a, b)
    for prefix, one_client in ((shared, True), (128, False)):
        server = spawn("--host", "::", "--open-posting", "--max-connections-per-address", "1",
                       "--header-timeout", "60", "--ipv6-prefix", str(prefix))
        port = int(server.url.rsplit(":", 1)[1])
        # a's connection, answered and kept alive: counted (at the per-address cap an idle one is not reclaimed)
        reader, writer = await asyncio.open_connection(a, port, local_addr=(a, 0))
        try:
            writer.write(HEALTHZ)
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            answer = await request(b, port)
        finally:
            writer.close()
        if one_client:  # b is in a's network of `prefix` bits: the same client, over its cap
            assert answer.startswith(b"HTTP/1.1 503"), (a, b, prefix, answer[:200])
            assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
        else:  # per address: another client
            assert answer.startswith(b"HTTP/1.1 200"), (a, b, prefix, answer[:200])
        server.stop()
