"""Small HTTP helpers shared by tests."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


async def post(session: aiohttp.ClientSession, base: str, video: str, text: str = "hi",
               author: str = "ana", **kwargs: Any) -> dict[str, Any]:
    async with session.post(f"{base}/v1/videos/{video}/comments",
                            json={"text": text, "author": author}, **kwargs) as r:
        body = await r.json()
        assert r.status == 201, body
        return body


async def history(session: aiohttp.ClientSession, base: str, video: str, **params: Any) -> dict[str, Any]:
    async with session.get(f"{base}/v1/videos/{video}/comments", params=params) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def all_seqs(session: aiohttp.ClientSession, base: str, video: str) -> list[int]:
    """Every stored seq of a video, oldest first, paging back from the head."""
    seqs: list[int] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = await history(session, base, video, **params)
        seqs += [c["seq"] for c in page["comments"]]
        if page["next"] is None:
            return sorted(seqs)
        params["before"] = page["next"]


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float:
    """The value of an unlabelled metric from /metrics."""
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        return r.status


async def until_status(session: aiohttp.ClientSession, url: str, want: int, timeout: float = 10) -> None:
    """Poll another process's state that has no event to await (readiness), bounded."""
    async with asyncio.timeout(timeout):
        while await status(session, url) != want:
            await asyncio.sleep(0.05)


async def until_metric(session: aiohttp.ClientSession, base: str, name: str, want: float,
                       timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while await metric(session, base, name) != want:
            await asyncio.sleep(0.02)
