"""Every aiohttp internal livecomments relies on is listed in livecomments/edge/aiohttp_private.py
and still there in the installed aiohttp: an upgrade that removes or renames one fails here by
name, before the behaviour pins (tests/test_ops_handover.py, tests/test_edge_connections.py)
fail by symptom. And no other module reaches into aiohttp's internals."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from livecomments.edge import aiohttp_private
from livecomments.edge.aiohttp_private import PRIVATE_MEMBERS

PACKAGE = Path(aiohttp_private.__file__).resolve().parents[1]  # livecomments/
# Unprefixed but undocumented: what we override or call on aiohttp's classes (the docstring's second list).
UNPREFIXED: dict[type, tuple[str, ...]] = {
    RequestHandler: ("connection_made", "data_received", "connection_lost", "handle_error", "force_close",
                     "set_parser", "transport"),
    web.Server: ("__call__", "request_handler", "request_factory", "handler_cancellation"),
}


async def _ok(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


async def instances() -> dict[type, object]:
    """Real aiohttp objects: instance attributes exist only once their __init__ ran."""
    server = web.Server(_ok)
    return {web.Server: server, RequestHandler: RequestHandler(server, loop=server._loop),
            web.AppRunner: web.AppRunner(web.Application())}


MEMBERS = [(cls, name) for table in (PRIVATE_MEMBERS, UNPREFIXED) for cls, names in table.items() for name in names]


@pytest.mark.parametrize(("cls", "name"), MEMBERS, ids=[f"{c.__name__}.{n}" for c, n in MEMBERS])
async def test_each_member_exists_on_aiohttp(cls: type, name: str) -> None:
    obj = (await instances())[cls]
    assert hasattr(obj, name), f"aiohttp {cls.__name__} has no {name} any more: see livecomments/edge/aiohttp_private.py"


def test_the_signatures_we_override_or_call_are_aiohttp_s() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    params = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert list(inspect.signature(RequestHandler.__init__).parameters)[:2] == ["self", "manager"]
    assert list(inspect.signature(RequestHandler.set_parser).parameters) == ["self", "parser", "data_received_cb"]


async def test_messages_hold_message_and_payload_pairs() -> None:
    """pending_body reads `_messages[-1][1]`: a request whose body is still coming is queued as
    (message, payload) with that payload not at eof."""
    handler = (await instances())[RequestHandler]
    assert isinstance(handler, RequestHandler)

    class Transport:  # the least a protocol needs to parse: aiohttp only reads from it here
        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

        def is_closing(self) -> bool:
            return False

        def close(self) -> None: ...

    handler.connection_made(Transport())  # type: ignore[arg-type]
    handler.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    message, payload = handler._messages[-1]
    assert message.method == "POST" and not payload.is_eof()
    assert aiohttp_private.Protocol.pending_body(handler) is payload  # type: ignore[arg-type]
    handler.connection_lost(None)


def test_the_docstring_lists_every_private_member() -> None:
    doc = aiohttp_private.__doc__ or ""
    for cls, names in PRIVATE_MEMBERS.items():
        shown = "web." + cls.__name__ if cls in (web.Server, web.AppRunner) else cls.__name__
        for name in names:
            assert f"`{shown}.{name}`" in doc, f"{shown}.{name} is used but not listed"


def _aiohttp_private_names() -> set[str]:
    names: set[str] = set()
    for cls in (RequestHandler, web.Server, web.AppRunner, web.BaseRequest, web.StreamResponse):
        for klass in cls.__mro__:
            if klass.__module__.startswith("aiohttp"):
                names |= {n for n in vars(klass) if n.startswith("_") and not n.startswith("__")}
                names |= {n for n in getattr(klass, "__slots__", ()) if n.startswith("_")}
    return names


def _own_names(tree: ast.Module) -> set[str]:
    """Attributes a module's own classes declare: their __slots__, and what their __init__ sets
    (an aiohttp member set anywhere else, as `self._force_close = True` once was, is not theirs)."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            own |= {e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "_make_server":
            own.add(node.name)  # its own methods (overriding _make_server is what this guards)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            for e in ast.walk(node):
                if isinstance(e, ast.Attribute) and isinstance(e.ctx, ast.Store) and \
                        isinstance(e.value, ast.Name) and e.value.id == "self":
                    own.add(e.attr)
    return own


def _parse(source: str) -> ast.Module:
    """ast.parse, again on a mismatch: CPython 3.11 before 3.11.8 may raise "SystemError: AST
    constructor recursion depth mismatch" spuriously (gh-106905)."""
    for _ in range(3):
        try:
            return ast.parse(source)
        except SystemError:
            pass
    return ast.parse(source)


def foreign_uses(source: str) -> list[str]:
    """`x._name` where _name is a private member of aiohttp's server classes and not the
    module's own, and imports of aiohttp's server modules: as 'line: what'."""
    private = _aiohttp_private_names()
    tree = _parse(source)
    mine = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private and node.attr not in mine:
            found.append(f"{node.lineno}: .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in ("aiohttp.web_protocol", "aiohttp.web_server"):
            found.append(f"{node.lineno}: import {node.module}")
    return found


def test_the_scan_finds_what_server_py_once_did() -> None:
    old = """
class EdgeRequestHandler(RequestHandler):
    __slots__ = ("_edge",)
    def __init__(self, manager, edge, **kwargs):
        super().__init__(manager, **kwargs)
        self._edge = edge
    def _refuse(self, transport):
        self._force_close = True
        self._loop.call_later(1.0, transport.close)
class EdgeRunner(web.AppRunner):
    async def _make_server(self):
        return EdgeServer(await super()._make_server(), self._edge)
"""
    assert [f.split(": ")[1] for f in foreign_uses(old)] == ["._force_close", "._loop", "._make_server"]


def test_no_other_module_touches_aiohttp_internals() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if path.name != "aiohttp_private.py" and "aiohttp" in source:
            found += [f"{path.relative_to(PACKAGE.parent)}:{use}" for use in foreign_uses(source)]
    assert not found, "aiohttp internals used outside livecomments/edge/aiohttp_private.py: " + ", ".join(found)
