"""What keeps other sites off the dashboard: it starts load runs, so a page elsewhere must not.

- Host: every request (the page too, which carries the token) names the dashboard itself: a loopback
  name, the host it was bound to or the address the connection reached, on the port it listens on.
  A DNS-rebinding page reaches the same socket under its own name, and is refused.
- Origin, when a browser sends one, is that same address over http.
- State-changing calls (POST, DELETE) carry the run's token, which only the page served here holds
  (a meta tag; dashboard.js sends it back in X-Dashboard-Token), and POST bodies are application/json:
  a cross-site form or no-cors fetch can send neither that header nor that type without a preflight
  the dashboard never answers.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web
from yarl import URL

from livecomments.edge.errors import Handler, error_response

TOKEN_HEADER = "X-Dashboard-Token"
TOKEN_META = b'<meta name="dashboard-token" content="">'
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD = frozenset({"", "0.0.0.0", "::"})
READS = frozenset({"GET", "HEAD"})


def new_token() -> str:
    return secrets.token_urlsafe(32)


def page_with_token(html: bytes, token: str) -> bytes:
    return html.replace(TOKEN_META, f'<meta name="dashboard-token" content="{token}">'.encode())


def _host_port(value: str, scheme: str = "http") -> tuple[str, int | None]:
    url = URL(f"{scheme}://{value}") if "://" not in value else URL(value)
    return (url.host or "").lower().rstrip("."), url.port


class Guard:
    def __init__(self, bound_host: str, token: str) -> None:
        self.token = token
        self.names = LOOPBACK | ({bound_host.lower().strip("[]")} - WILDCARD)

    def _ours(self, request: web.Request, host: str, port: int | None) -> bool:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            return False
        return port == sockname[1] and (host in self.names or host == str(sockname[0]).lower())

    def refusal(self, request: web.Request) -> web.Response | None:
        """The refusal for a request that is not the dashboard's own page talking to it, or None."""
        try:
            host, port = _host_port(request.headers.get("Host", ""))
        except ValueError:
            host, port = "", None
        if not self._ours(request, host, port):
            return error_response(421, "wrong_host", "this is the dashboard on a loopback address: "
                                  "open it by that address, not another name")
        origin = request.headers.get("Origin")
        if origin is not None:
            try:
                o_host, o_port = _host_port(origin)
                ok = URL(origin).scheme == "http" and self._ours(request, o_host, o_port)
            except ValueError:
                ok = False
            if not ok:
                return error_response(403, "foreign_origin", "requests from other sites are refused")
        if request.method in READS:
            return None
        if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), self.token.encode()):
            return error_response(403, "bad_token", f"state-changing calls need the page's {TOKEN_HEADER}")
        if request.method == "POST" and request.content_type != "application/json":
            return error_response(415, "unsupported_media_type", "the body must be application/json")
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return self.refusal(request) or await handler(request)
