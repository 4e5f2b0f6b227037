"""The generated nginx and HAProxy configs set X-Forwarded-For, so anonymous limits see clients."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import StartServer


async def send_from(local_ip: str, base: str) -> int:
    # The client's own address on loopback: 127.0.0.2 and .3 reach the proxy as two clients.
    connector = aiohttp.TCPConnector(local_addr=(local_ip, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{base}/v1/videos/v1/comments", json={"text": "hi", "author": "x"}) as r:
            await r.read()
            return r.status


@pytest.mark.parametrize("fmt", ["nginx", "haproxy"])
async def test_clients_behind_the_generated_proxy_get_buckets_of_their_own(
    start_server: StartServer, start_proxy: Any, fmt: str,
) -> None:
    base = await start_server(trusted_proxies=("127.0.0.1",), rate_limit_per_s=0.05, rate_limit_burst=2)
    addr = base.removeprefix("http://")
    proxy = start_proxy([addr], [addr], fmt=fmt)
    assert [await send_from("127.0.0.2", proxy.url) for _ in range(3)] == [201, 201, 429]
    assert await send_from("127.0.0.3", proxy.url) == 201
    # A client is its address, through the proxy or straight (loopback is limited too):
    assert await send_from("127.0.0.3", base) == 201  # .3's second post of its burst of 2
    assert await send_from("127.0.0.2", base) == 429  # .2 spent its burst through the proxy
