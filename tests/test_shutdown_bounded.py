"""Shutdown is bounded whatever state the Redis link is in (issue 23: orphaned workers that never exited).

The cause: redis-py sends every command through asyncio.wait_for, and Python 3.11's wait_for returns
the command's result and drops a cancellation that lands just as the command completes (CPython
gh-86296, fixed in 3.12). The broker's supervisor task, cancelled by close() while its link was
coming up, went on to open the session and watch it for ever, and close() waited on it for ever.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from livecomments.brokers.redis import RedisBroker
from tests.fixtures.processes import RedisProcess, Spawn, free_port

CLOSE_BOUND = 5.0  # close() takes milliseconds; a supervisor that swallowed its cancel never ends
EXIT_BOUND = 10.0  # below the backstop (shutdown_timeout 5 s + SHUTDOWN_GRACE 10 s), which exits with 1


async def test_close_ends_the_broker_wherever_its_link_is_coming_up(redis_server: RedisProcess) -> None:
    # close() after 0, 1, 2, … loop iterations: one of them lands while a command (HELLO, SUBSCRIBE)
    # completes inside wait_for, the moment a single cancel() was lost. Each round is one local connect.
    for round_ in range(3):
        for steps in range(40):
            broker = RedisBroker(redis_server.url)
            await broker.start(lambda channel, data: None, lambda: None, held=("lc:all",))
            for _ in range(steps):
                await asyncio.sleep(0)
            started = time.monotonic()
            try:
                async with asyncio.timeout(CLOSE_BOUND):
                    await broker.close()
            except TimeoutError:
                raise AssertionError(f"close() after {steps} loop iterations (round {round_}) did not return "
                                     f"within {CLOSE_BOUND:g} s") from None
            assert time.monotonic() - started < CLOSE_BOUND


@pytest.mark.parametrize("redis_state", ["frozen", "absent"])
def test_sigterm_right_after_start_ends_serve_while_redis_is_frozen_or_absent(redis_state: str, spawn: Spawn,
                                                                              redis_server: RedisProcess) -> None:
    # frozen: SIGSTOPped, so the kernel accepts the connection and the handshake waits for an answer;
    # absent: nothing listens, so the link fails and backs off. Either way the link is still coming up.
    assert redis_server.proc is not None
    if redis_state == "frozen":
        redis_server.proc.send_signal(signal.SIGSTOP)
        url = redis_server.url
    else:
        url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        server = spawn("--role", "realtime", "--strategy", "broadcast", "--broker", url)
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=EXIT_BOUND)  # raises TimeoutExpired (and kills) past it
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert code == 0, server.log_path.read_text()[-2000:]  # a clean stop, not the backstop's exit 1
    assert time.monotonic() - started < EXIT_BOUND
