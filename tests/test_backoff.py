"""The one reconnect backoff (livecomments/backoff.py): redis-py's equal jitter, bounded, and safe
after any number of failures."""

from __future__ import annotations

import random

from redis.backoff import EqualJitterBackoff

from livecomments.backoff import backoff


def test_equal_jitter_between_half_and_all_of_the_capped_delay() -> None:
    for failures, delay in [(0, 0.05), (1, 0.1), (3, 0.4), (5, 1.6), (6, 2.0), (40, 2.0)]:
        waits = [backoff(failures, 0.05, 2.0) for _ in range(200)]
        assert all(delay / 2 <= w <= delay for w in waits), (failures, min(waits), max(waits))
        assert max(waits) - min(waits) > delay / 4  # jittered, not fixed


def test_the_same_waits_as_redis_py_from_the_same_random_draws() -> None:
    ours, theirs = random.Random(7), random.Random(7)
    redis_backoff = EqualJitterBackoff(cap=2.0, base=0.05)
    for failures in range(12):
        random.seed(ours.random())
        mine = backoff(failures, 0.05, 2.0)
        random.seed(theirs.random())
        assert mine == redis_backoff.compute(failures)


def test_no_overflow_after_a_long_outage() -> None:
    assert 1.0 <= backoff(5000, 0.05, 2.0) <= 2.0  # 2.0 ** 1024 once raised OverflowError here
