"""Verification keys from a JWKS endpoint (`auth_jwks_url`): a login server publishes its
public keys as a JSON Web Key Set, each with a `kid`, and rotates them by publishing the new
key next to the old one. Framework-free (aiohttp's client only); the edge starts it
(livecomments/edge/auth.py) and tokens.py asks it for keys.

Why not PyJWT's PyJWKClient: it fetches with urllib, synchronously, so a slow endpoint would
block the event loop and with it every stream of the process. Here the set is fetched with
aiohttp, parsed with PyJWT's PyJWKSet, and kept in a dict by kid.

What bounds what:
- A token with a kid we have is verified with no fetch: an endpoint that is down or slow
  never stalls posts whose key is cached.
- A token with an unknown kid asks for a refresh (the issuer may have rotated), but such
  fetches happen at most once per `cooldown` seconds (`auth_jwks_cooldown`, default 10), one
  fetch at a time, each bounded by FETCH_TIMEOUT_S: a flood of random kids costs the endpoint
  at most one request per cooldown (plus the periodic one), and each such request waits at
  most the timeout before its 401.
- The set is re-read every REFRESH_S even when nobody asks, so a key the issuer removed stops
  verifying within that time; a failed fetch keeps the keys we have (one log line).
- At start the set is fetched once before the port opens. If the endpoint is down then, the
  process starts anyway (one warning line), tokens get 401 until a fetch succeeds, and it
  retries every cooldown until one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import jwt

from livecomments.config import mask_url
from livecomments.tokens import Key

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 3.0  # one fetch, connect to last byte
REFRESH_S = 300.0  # the set is re-read this often: how long a removed key keeps verifying
MAX_JWKS_BYTES = 256 * 1024  # a key set is a few KB; more is not a key set


class JwksKeys:
    """The keys of one JWKS URL, by kid. `start` before use, `close` after."""

    def __init__(self, url: str, *, cooldown: float, timeout: float = FETCH_TIMEOUT_S,
                 refresh: float = REFRESH_S) -> None:
        self.url = url
        self._shown = mask_url(url)  # as logged: a credential in the URL stays out of the log
        self._cooldown = cooldown
        self._timeout = timeout
        self._refresh = refresh
        self._by_kid: dict[str, Key] = {}
        self._all: tuple[Key, ...] = ()
        self._loaded = False  # a fetch has succeeded once
        self._last_asked = -float("inf")  # monotonic start of the last fetch an unknown kid caused
        self._fetching: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._keeper: asyncio.Task[None] | None = None

    def get(self, kid: str) -> Key | None:
        return self._by_kid.get(kid)

    def all(self) -> tuple[Key, ...]:
        return self._all

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        await self._fetch()
        self._keeper = asyncio.create_task(self._keep_fresh())

    async def close(self) -> None:
        for task in (self._keeper, self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()

    async def refresh_for(self, kid: str) -> None:
        """Fetch the set again for a kid we do not have, unless an unknown kid caused a fetch less
        than `cooldown` ago; join the fetch under way if there is one. Never raises; waits at
        most the timeout. (The start's and the periodic fetches have their own clock: a key
        rotated in just after one of them is fetched at once.)"""
        if self._fetching is None:
            now = time.monotonic()
            if now - self._last_asked < self._cooldown:
                return
            self._last_asked = now
        await self._fetch()

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh if self._loaded else self._cooldown)
            await self._fetch()

    async def _fetch(self) -> None:
        """One fetch at a time: callers that come while it runs wait for the same one."""
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch_once())
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._fetching = None

    async def _fetch_once(self) -> None:
        try:
            keys = await self._download()
        except Exception as e:  # down, slow, not JSON, no usable key: keep what we have
            reason = "timed out" if isinstance(e, TimeoutError) else (str(e) or type(e).__name__)
            log.warning("auth_jwks_url %s: cannot fetch keys (%s); keeping %d cached keys",
                        self._shown, reason.splitlines()[0][:200], len(self._all))
            return
        by_kid = {key.kid: key for key in keys if key.kid}
        if not self._loaded or by_kid.keys() != self._by_kid.keys():
            log.info("auth_jwks_url %s: %d keys, kids: %s", self._shown, len(keys), ", ".join(sorted(by_kid)) or "none")
        self._by_kid, self._all, self._loaded = by_kid, keys, True

    async def _download(self) -> tuple[Key, ...]:
        assert self._session is not None, "start() first"
        async with self._session.get(self.url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
        return _keys_of(jwt.PyJWKSet.from_json(body.decode()))


def _keys_of(jwks: jwt.PyJWKSet) -> tuple[Key, ...]:
    """The signing keys, each pinned to its JWK's algorithm (its `alg`, else what its type implies).
    A key without a kid is only tried for tokens without one (tokens.py)."""
    return tuple(Key(jwk.key, str(jwk.algorithm_name), jwk.key_id) for jwk in jwks.keys
                 if jwk.public_key_use in (None, "sig"))  # an encryption key verifies nothing
