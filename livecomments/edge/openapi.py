"""GET /v1/openapi.json: the OpenAPI 3.1 description of the public API, served on every role.

Its one source is openapi.yaml beside this module (package data): YAML to read and edit, JSON
to serve. It is parsed and encoded once, when the app is built, so a request costs nothing and a
broken file stops the start instead of failing a client."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import yaml
from aiohttp import web

PATH = "/v1/openapi.json"


def load() -> dict[str, Any]:
    """The description as a dict (the tests read it this way too)."""
    text = resources.files("livecomments.edge").joinpath("openapi.yaml").read_text(encoding="utf-8")
    # libyaml's safe loader where PyYAML has it: 7 ms where the pure-Python one takes 70 ms of every start
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec: dict[str, Any] = yaml.load(text, Loader=loader)
    return spec


def add_routes(app: web.Application) -> None:
    body = orjson.dumps(load())

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(PATH, openapi)
