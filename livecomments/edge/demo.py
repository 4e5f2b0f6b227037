"""The demo page: /demo/ from package data (livecomments/demo/), `GET /` → /demo/, /demo/config.json,
and the browser client it is built on, /client/livecomments.js (livecomments/client/, docs/client.md).

The files are read once, when the app is built: they are a few KiB and never change while a
process runs. Every demo answer carries a strict Content-Security-Policy: the page loads
nothing from another host and runs no inline script, so a comment that slipped past the
page's escaping still could not run code or send data elsewhere.
"""

from __future__ import annotations

import re
from importlib import resources

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from livecomments.edge.keys import CONFIG
from livecomments.errors import ApiError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
CONTROLS = re.compile("[\x00-\x1f\x7f]")
DEMO_FILES = {
    "index.html": "text/html",
    "style.css": "text/css",
    # ES modules, no build step: app.js imports the others
    **{f"{module}.js": "text/javascript" for module in ("app", "page", "api", "comments", "stream", "composer")},
}
CLIENT_FILE = "livecomments.js"
CLIENT_PATH = "/client/livecomments.js"  # the demo imports it from here, as any page may


def _headers(content_type: str) -> dict[str, str]:
    return {
        "Content-Type": f"{content_type}; charset=utf-8",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",  # revalidate: a new version of the page shows at the next load
    }


def _file_handler(body: bytes, content_type: str) -> Handler:
    async def serve_file(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=_headers(content_type))

    return serve_file


async def demo_config(request: web.Request) -> web.Response:
    """What the page must know before the first post: whether posting needs a token, and the limits."""
    config = request.app[CONFIG]
    body = {
        "auth": bool(config.auth_jwt_secret or config.auth_jwt_public_key),
        "auth_streams": config.auth_streams,
        "max_text": config.max_text,
        "max_author": config.max_author,
        "page_limit": min(50, config.page_limit),
    }
    return web.Response(body=orjson.dumps(body), headers=_headers("application/json"))


async def to_demo(request: web.Request) -> web.Response:
    """`/` and `/demo` → `/demo/`, keeping the query (`?video=ID`) re-encoded: never the decoded
    text, whose CR/LF would end the Location header (aiohttp then sends nothing at all)."""
    if any(CONTROLS.search(part) for item in request.query.items() for part in item):
        raise ApiError(400, "bad_request", "the query holds control characters")
    return web.Response(status=302, headers={"Location": str(URL("/demo/").with_query(request.query))})


def add_routes(app: web.Application) -> None:
    package = resources.files("livecomments.demo")
    for name, content_type in DEMO_FILES.items():
        handler = _file_handler(package.joinpath(name).read_bytes(), content_type)
        path = "/demo/" if name == "index.html" else f"/demo/{name}"
        app.router.add_get(path, handler)
    client = resources.files("livecomments.client").joinpath(CLIENT_FILE).read_bytes()
    app.router.add_get(CLIENT_PATH, _file_handler(client, "text/javascript"))
    app.router.add_get("/demo/config.json", demo_config)
    app.router.add_get("/demo", to_demo)
    app.router.add_get("/", to_demo)
