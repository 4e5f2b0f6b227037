"""A private DynamoDB-compatible server on a free port: moto's server, the one way the tests, the
benchmarks and the fault suite start it (PostgreSQL and etcd are services.py, redis procs.py).

Why moto: it installs from PyPI (`moto[server]`, pure Python: no Java, no Node.js, no native
build), starts in ~2 s, and checks the condition and key expressions the dynamodb:// storage
uses as DynamoDB does. It is an emulator: what a benchmark measures on it is our code's cost
and an in-memory emulator's, never AWS's. One process serves many callers: each `url()` is a
new table prefix, so they share nothing.

Faults: `halt()`/`resume()` freeze and thaw it (SIGSTOP/SIGCONT). moto keeps its tables in
memory, so killing it would lose every comment and no "server stopped and started" fault could
be checked against storage afterwards. With `gate=True` clients reach it through a small TCP
forwarder of its own (`python -m livecomments.ops.dynamo_server`), and `cut()`/`restore()` kill
the forwarder (every connection dropped, new ones refused: the endpoint is gone) and start it
again on the same port, the tables intact.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import uuid

from livecomments.ops.procs import die_with_parent, free_port
from livecomments.ops.services import ServiceUnavailable, stop_child, wait_port

__all__ = ["DynamoServer"]

INSTALL = "pip install 'moto[server]'"
# moto signs nothing, but botocore refuses to call an endpoint without some credentials.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


class DynamoServer:
    """moto's server on 127.0.0.1:`port` (a free one), optionally behind a gate (see the module)."""

    def __init__(self, port: int = 0, gate: bool = False) -> None:
        self.port = port or free_port()  # what clients use: the gate's port when there is one
        self.moto_port = free_port() if gate else self.port
        self.proc: subprocess.Popen[bytes] | None = None  # moto itself: signal this one to freeze it
        self.gate: subprocess.Popen[bytes] | None = None
        self._gated = gate
        self._prefixes = itertools.count()
        self._run = uuid.uuid4().hex[:8]

    def start(self, timeout: float = 30.0) -> DynamoServer:
        """Returns once it accepts connections; ServiceUnavailable (one line) when it cannot. Call it
        from the main thread: only then does moto die with its caller (procs.die_with_parent)."""
        if importlib.util.find_spec("moto") is None:
            raise ServiceUnavailable(f"a DynamoDB-compatible server needs moto: {INSTALL}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **DUMMY_CREDENTIALS}, preexec_fn=die_with_parent(),  # a killed caller leaves no moto
        )
        try:
            wait_port(self.moto_port, timeout, self.proc)
            if self._gated:
                self.restore(timeout)
        except (ServiceUnavailable, TimeoutError) as e:
            self.stop()
            raise ServiceUnavailable(f"moto server did not start ({e}): {INSTALL}") from None
        return self

    def url(self) -> str:
        """A new table prefix on this server: a database nobody else sees."""
        return f"dynamodb://127.0.0.1:{self.port}/t{self._run}_{next(self._prefixes)}"

    def halt(self) -> None:
        """Freeze it: connections stay open and nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cut(self) -> None:
        """The endpoint goes away: the gate is killed (its connections reset), its port refuses."""
        assert self._gated, "cut() needs DynamoServer(gate=True)"
        stop_child(self.gate, (), 5.0)

    def restore(self, timeout: float = 10.0) -> None:
        """The gate again, on the same port, in front of the same tables."""
        self.gate = subprocess.Popen(
            [sys.executable, "-m", "livecomments.ops.dynamo_server", str(self.port), str(self.moto_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, timeout, self.gate)

    def stop(self) -> None:
        stop_child(self.gate, (), 5.0)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen process would not die before it runs again
        stop_child(self.proc, (), 10.0)


async def _forward(listen: int, target: int) -> None:
    """Every connection to `listen` piped to `target`, byte for byte, until killed."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen)  # SO_REUSEADDR: the same port again at once
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the gate of a DynamoServer: a TCP forwarder, killed to cut it")
    parser.add_argument("listen", type=int)
    parser.add_argument("target", type=int)
    args = parser.parse_args(argv)
    asyncio.run(_forward(args.listen, args.target))


if __name__ == "__main__":
    main()
