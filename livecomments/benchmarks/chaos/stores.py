"""The storage servers a chaos run breaks: PostgreSQL, or a DynamoDB-compatible server (moto's),
behind one small interface, so every scenario runs unchanged on either.

Each gives a fresh database per strategy, goes down and comes back with its data (an outage, not
a wipe), and names the process to freeze. PostgreSQL goes down by a fast shutdown of the
postmaster and comes back on the same port and data directory. moto keeps its tables in memory,
so it is never killed: its gate (ops/dynamo_server.py) is, which drops every open connection
and refuses new ones exactly as a server that went away; SIGSTOP freezes moto itself.
"""

from __future__ import annotations

from typing import Protocol

from livecomments.ops.dynamo_server import DynamoServer
from livecomments.ops.services import PostgresServer

NAMES = ("postgresql", "dynamodb")


class ChaosStore(Protocol):
    name: str  # as the report and the step names say it

    def database(self) -> str:
        """The storage URL of a fresh, empty database."""

    def down(self) -> None: ...

    def up(self) -> None:
        """Back, with everything it held before `down`."""

    def pid(self) -> int:
        """The process that serves: SIGSTOP to it freezes the store."""

    def stop(self) -> None: ...


class PostgresStore:
    name = "PostgreSQL"

    def __init__(self) -> None:
        self.server = PostgresServer().start()

    def database(self) -> str:
        return self.server.database()

    def down(self) -> None:
        self.server.halt()

    def up(self) -> None:
        self.server.resume()

    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()


class DynamoStore:
    name = "DynamoDB (moto)"

    def __init__(self) -> None:
        self.server = DynamoServer(gate=True).start()

    def database(self) -> str:
        return self.server.url()

    def down(self) -> None:
        self.server.cut()

    def up(self) -> None:
        self.server.restore()

    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()


def start(name: str) -> ChaosStore:
    """Blocks until it serves; ServiceUnavailable (one line) when it cannot be started here."""
    return DynamoStore() if name == "dynamodb" else PostgresStore()
