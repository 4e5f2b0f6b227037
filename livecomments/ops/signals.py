"""Waiting for a stop signal or a child's death, with no lock taken in a signal handler (issue 24).

A Python signal handler runs on the main thread between two bytecodes, inside whatever it
interrupted: `threading.Event.wait()` holds the Event's non-reentrant lock while it waits, so a
handler that calls `event.set()` there blocks on that lock for ever. Here the handler only
assigns a plain attribute; what wakes the waiter is the byte the interpreter's C-level handler
writes to a pipe (signal.set_wakeup_fd) for every signal, and the wait is a select() on that
pipe, so a signal that lands at any moment (before, during or after the select) ends it: the
byte stays in the pipe until it is read. SIGCHLD is written there too, so a child's death wakes
the launcher at once to reap it (no zombie) and start it again.

Imports nothing from livecomments, so a test can run the real wait loop in a bare interpreter.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: its terminal was closed


class StopSignals:
    """While open (main thread only), SIGINT, SIGTERM, SIGHUP and SIGCHLD wake wait() and do nothing else."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None  # the first stop signal
        self._r = self._w = -1
        self._saved_fd = -1
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._saved_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in (*STOP_SIGNALS, signal.SIGCHLD):
            self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._saved_fd)
        os.close(self._r)
        os.close(self._w)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Runs between any two bytecodes of the main thread: an assignment, no lock, no call that may take one."""
        if signum != signal.SIGCHLD and self.received is None:
            self.received = signal.Signals(signum)

    def wait(self, timeout: float) -> signal.Signals | None:
        """Sleep until a signal arrives or `timeout` passes; the stop signal received so far, if any."""
        if self.received is None:
            select.select([self._r], [], [], max(0.0, timeout))
            self._drain()
        return self.received

    def _drain(self) -> None:
        """Read the signal numbers the C handler wrote (the Python handler may not have run yet)."""
        while True:
            try:
                data = os.read(self._r, 4096)
            except BlockingIOError:
                return
            for signum in data:
                if signum in STOP_SIGNALS and self.received is None:
                    self.received = signal.Signals(signum)


def wait_for_stop(signals: StopSignals, tend: Callable[[], float]) -> signal.Signals:
    """Call tend() until a stop signal arrives, and return that signal.

    tend() reaps and restarts children and returns how long it may sleep at most; a child's death
    or a stop signal wakes the wait sooner. An exception from tend() ends the wait."""
    while True:
        received = signals.wait(tend())
        if received is not None:
            return received
