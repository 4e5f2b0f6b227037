"""The consistent-hash ring nginx builds for `hash $key consistent`, reproduced point for point.

Our own code must predict where nginx sends a video's viewers (the simulator, the benchmark's
direct mode), so this is not "a" ketama ring but nginx's: ngx_http_upstream_hash_module.c,
ngx_http_upstream_init_chash / find_chash_point. uhashring does not fit: its ketama mode is
libketama's (md5, 4 points per digest), while nginx follows Cache::Memcached::Fast (crc32).

- Each server `HOST:PORT` (the text of its `server` directive) gets 160 points per weight:
  point_0 = crc32(HOST "\\0" PORT prev) with prev = 0, point_j = the same with prev = point_{j-1}
  as 4 little-endian bytes (nginx writes them little-endian on every CPU).
- Points are sorted; equal hashes keep only one (nginx's qsort is not stable, so which server
  keeps a colliding point is unspecified there too; with a handful of servers it never happens).
- A key goes to the first point whose hash is >= crc32(key), wrapping to the first point.
- While every server is up this is the whole placement; nginx only walks further on failures.

`bounded_placement` adds HAProxy's consistent hashing with bounded loads (`hash-balance-factor`,
lb_chash.c chash_server_is_eligible) on this ring: a server takes a new connection only while it
holds fewer than its share of ceil((all connections + 1) × factor) slots, else the key walks on to
the next point of the ring. HAProxy's ring points differ (its own hash of server ids), so which
server a cold video lands on differs; the load bound and the spill rule are the same.
"""

from __future__ import annotations

import bisect
import struct
import zlib
from collections.abc import Iterable, Sequence

POINTS_PER_WEIGHT = 160


def _host_port(server: str) -> tuple[bytes, bytes]:
    """nginx's split: a trailing `:digits` is the port; `unix:` paths have none."""
    raw = server.encode()
    if raw[:5].lower() == b"unix:":
        return raw[5:], b""
    host, sep, port = raw.rpartition(b":")
    if sep and (port.isdigit() or not port):
        return host, port
    return raw, b""


class HashRing:
    """Placement of keys on `nodes` ("host:port", as written in nginx's upstream), all weight 1."""

    def __init__(self, nodes: Sequence[str]) -> None:
        if not nodes:
            raise ValueError("a hash ring needs at least one node")
        points: dict[int, str] = {}
        for node in nodes:
            host, port = _host_port(node)
            base = host + b"\0" + port
            prev = 0
            for _ in range(POINTS_PER_WEIGHT):
                prev = zlib.crc32(base + struct.pack("<I", prev))
                points.setdefault(prev, node)
        self.nodes = tuple(nodes)
        self._hashes = sorted(points)
        self._owners = [points[h] for h in self._hashes]

    def point_for(self, key: str) -> int:
        """The index of the ring point `key` maps to."""
        return bisect.bisect_left(self._hashes, zlib.crc32(key.encode())) % len(self._hashes)

    def node_for(self, key: str) -> str:
        """The node nginx's `hash <key> consistent` picks for `key` while all nodes are up."""
        return self._owners[self.point_for(key)]


def balance_percent(balance_factor: float) -> int:
    """HAProxy's hash-balance-factor: the factor in percent, above 100."""
    percent = round(balance_factor * 100)
    if percent <= 100:
        raise ValueError(f"balance factor {balance_factor:g} must be above 1 (1.25: no server above 1.25 × the mean)")
    return percent


def bounded_placement(ring: HashRing, keys: Sequence[str], arrivals: Iterable[int], balance_factor: float) -> list[int]:
    """The node index (in ring.nodes) of each connection, arriving in order for keys[i], none leaving."""
    factor, k = balance_percent(balance_factor), len(ring.nodes)
    index = {node: i for i, node in enumerate(ring.nodes)}
    owners = [index[node] for node in ring._owners]
    homes = [ring.point_for(key) for key in keys]
    served, placed, total = [0] * k, [], 0
    for key in arrivals:
        slots_all = ((total + 1) * factor + 99) // 100  # every connection, the new one included, × factor
        per, rest = divmod(slots_all, k)
        point = homes[key]
        while True:
            node = owners[point]
            # equal weights: the rest is spread by cumulative weight, as HAProxy does
            slots = per + (node + 1) * rest // k - node * rest // k or 1
            if served[node] < slots:
                break
            point = point + 1 if point + 1 < len(owners) else 0
        served[node] += 1
        total += 1
        placed.append(node)
    return placed
