"""How long to wait before the next attempt to reach a broker or registry: one rule for all.

Equal jitter (redis-py's `EqualJitterBackoff`, the same formula, which the Redis-free
registries cannot import): half of the capped exponential delay fixed, half random, so a
fleet that lost its Redis or etcd at once does not come back at once, and no wait is under
half the delay. Framework-free.
"""

from __future__ import annotations

import asyncio
import math
import random


def backoff(failures: int, base: float, cap: float) -> float:
    """The wait after `failures` failures in a row (0 for the first): between half of
    min(cap, base * 2**failures) and all of it."""
    try:
        delay = min(cap, math.ldexp(base, failures))  # ldexp: no OverflowError after ~1,000 failures
    except OverflowError:
        delay = cap
    return delay / 2 + random.uniform(0, delay / 2)


def cancelling() -> bool:
    """Whether the running task is being cancelled. A retry loop around a client library's calls
    asks this each round: redis-py can swallow a cancellation landing mid-call (or turn it into an
    error of its own), and a loop that went round again would never stop (a shutdown hung so until
    SIGKILL)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
