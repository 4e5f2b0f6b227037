"""Issue 24: `cluster` hung for ever when SIGHUP/SIGTERM/Ctrl-C landed while its wait loop held a
threading.Event's lock. The launcher's real wait loop (ops/signals.py) runs here in a bare
interpreter, 200 times, each sent one stop signal at a random moment while it spins; every
launch must exit within the bound, having seen that signal. The whole-cluster signal tests are
in test_cluster.py."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import livecomments
from livecomments.ops.signals import STOP_SIGNALS

LAUNCHES = 200
PARALLEL = 8
BOUND = 10.0  # seconds from the signal to the exit, as for a whole cluster

ROOT = str(Path(livecomments.__file__).parent.parent)
# The launcher's loop with a tend() that asks to be called again after `interval`: 0 spins through
# select() and back as fast as it can, so the signal lands anywhere in the loop. Run with -S (no
# site-packages: signals.py needs none), which halves the interpreter's start.
CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from livecomments.ops.signals import StopSignals, wait_for_stop
interval = float(sys.argv[1])
with StopSignals() as stop:
    print("ready", flush=True)
    received = wait_for_stop(stop, lambda: interval)
print(received.name, flush=True)
"""


async def launch(sig: signal.Signals, delay: float, interval: float) -> str | None:
    """What went wrong with one launch, or None."""
    what = f"{sig.name} {delay * 1000:.1f} ms after ready, tend() every {interval:g} s"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-S", "-c", CHILD, str(interval), ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(BOUND):
            ready = await proc.stdout.readline()
        if ready != b"ready\n":
            return f"{what}: started with {ready!r}, {(await proc.stderr.read())[-300:]!r}"
        await asyncio.sleep(delay)  # a random moment of the loop: not a synchronisation
        proc.send_signal(sig)
        async with asyncio.timeout(BOUND):
            out, err = await proc.communicate()
    except TimeoutError:
        return f"{what}: still running {BOUND:g} s later"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or out != f"{sig.name}\n".encode():
        return f"{what}: exit {proc.returncode}, printed {out!r}, {err[-300:]!r}"
    return None


async def test_a_stop_signal_at_any_moment_of_the_wait_loop_ends_it() -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    slots = asyncio.Semaphore(PARALLEL)

    async def one() -> str | None:
        sig, delay, interval = rng.choice(STOP_SIGNALS), rng.uniform(0, 0.1), rng.choice([0.0, 0.001, 0.5])
        async with slots:
            return await launch(sig, delay, interval)

    results = await asyncio.gather(*(one() for _ in range(LAUNCHES)))
    failures = [r for r in results if r is not None]
    assert failures == [], f"{len(failures)} of {LAUNCHES} launches failed (seed {seed}): {failures[:5]}"
