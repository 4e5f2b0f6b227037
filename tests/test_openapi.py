"""The OpenAPI description (livecomments/edge/openapi.yaml): valid OpenAPI 3.1, served at
/v1/openapi.json, in step with the routes the app registers, with docs/api.md's error table and
with the codes the code raises, and true of a real server under Schemathesis' fuzzing."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import livecomments
from livecomments.config import Config
from livecomments.edge import openapi
from livecomments.edge.app import create_app
from livecomments.tokens import mint
from tests.fixtures.processes import LivecommentsProcess, serve_args, sqlite_url

ROOT = Path(__file__).parent.parent
SPEC = openapi.load()
SECRET = "openapi-fuzz-secret-" + "k" * 32
TIMEOUT = 10.0


def _routes(app: web.Application) -> tuple[set[tuple[str, str]], list[str]]:
    """(method, path template) of every public route, and the prefixes of static resources.
    Not the API: /internal/ (dispatcher pushes, never routed by a balancer), the demo and `/`
    (its redirect to the demo)."""
    routes: set[tuple[str, str]] = set()
    static: list[str] = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        if isinstance(resource, web.StaticResource):
            static.append(resource.canonical.rstrip("/") + "/")
            continue
        path = resource.canonical
        if path.startswith(("/internal/", "/demo")) or path == "/":
            continue
        routes.add((route.method, path))
    return routes, static


def _spec_operations() -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "head", "patch", "options"}
    return {(m.upper(), path) for path, item in SPEC["paths"].items() for m in item if m in methods}


Routes = dict[str, tuple[set[tuple[str, str]], list[str]]]


def _app_routes(tmp_path: Path) -> Routes:
    """role -> the routes (and static prefixes) of the real create_app for it (nothing is started)."""
    base = Config(storage=f"sqlite:///{tmp_path}/lc.db", port=0)
    redis = "redis://127.0.0.1:6379/0"  # never connected: create_app only builds
    configs = {"both": base, "writer": base.replace(role="writer", broker=redis),
               "realtime": base.replace(role="realtime", broker=redis)}
    return {role: _routes(create_app(config.validate())) for role, config in configs.items()}


def test_the_description_is_valid_openapi_3_1() -> None:
    validate(SPEC, cls=OpenAPIV31SpecValidator)
    assert SPEC["openapi"].startswith("3.1")
    assert SPEC["info"]["version"] == livecomments.__version__  # bump it with the package


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> Routes:
    return _app_routes(tmp_path_factory.mktemp("routes"))


def test_every_route_is_described_and_every_operation_is_routed(app_routes: Routes) -> None:
    routes = set().union(*(found for found, _ in app_routes.values()))
    static = [prefix for _, prefixes in app_routes.values() for prefix in prefixes]
    described = _spec_operations()
    # aiohttp adds HEAD beside every GET (HTTP's own rule: GET's headers, no body); an explicit HEAD is described
    implied = {("HEAD", path) for method, path in routes if method == "GET"} - described
    assert sorted(routes - implied - described) == []
    missing = {op for op in described - routes if not any(op[1].startswith(p) for p in static)}
    assert sorted(missing) == []


def test_api_md_lists_every_operation_with_the_roles_that_answer_it(app_routes: Routes) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("## Routes"):]
    table = table[: table.index("\n\n", table.index("|"))]
    rows = {(method, path): role for method, path, role in re.findall(r"^\| `([A-Z]+) (/\S*)` \| ([a-z]+)", table, re.M)
            if not path.startswith("/internal/")}
    assert sorted(rows.keys() ^ _spec_operations()) == []
    for operation, role in rows.items():
        answering = {r for r, (found, _) in app_routes.items() if operation in found}
        expected = {"all": {"both", "writer", "realtime"}, "writer": {"both", "writer"},
                    "realtime": {"both", "realtime"}}[role]
        assert (operation, answering) == (operation, expected)


def _spec_codes() -> dict[str, set[str]]:
    """Error codes by status ("ws" for the WebSocket's in-band errors)."""
    schemas = SPEC["components"]["schemas"]
    codes = {name[len("Error"):]: set(schema["properties"]["error"]["properties"]["code"]["enum"])
             for name, schema in schemas.items() if re.fullmatch(r"Error\d{3}", name)}
    codes["ws"] = set(schemas["WsError"]["properties"]["error"]["properties"]["code"]["enum"])
    return codes


def _documented_codes() -> dict[str, set[str]]:
    """docs/api.md's error table: status -> codes (parenthesised remarks are not codes)."""
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("## Errors"):]
    table = table[: table.index("\n## ", 1)]
    rows: dict[str, set[str]] = {}
    for status, cell in re.findall(r"^\| (\d{3}) \| (.*) \|$", table, re.M):
        cell = re.sub(r"\([^)]*\)", "", cell)
        rows[status] = set(re.findall(r"`([a-z][a-z_]*)`", cell))
    return rows


def test_every_documented_error_code_is_in_the_description_and_back() -> None:
    spec, documented = _spec_codes(), _documented_codes()
    assert {"400", "401", "403", "404", "422", "429", "503"} <= documented.keys()
    absent = {(status, code) for status, codes in documented.items() for code in codes
              if code not in spec.get(status, set()) and code not in spec["ws"]}
    assert sorted(absent) == []
    undocumented = {(status, code) for status, codes in spec.items() if status != "ws" for code in codes
                    if code not in documented.get(status, set())}
    assert sorted(undocumented) == []


def test_every_code_in_the_description_is_one_the_code_raises() -> None:
    sources = [ROOT / "livecomments" / name for name in ("errors.py", "model.py", "tokens.py")]
    sources += sorted((ROOT / "livecomments" / "edge").glob("*.py"))
    literals = set()
    for path in sources:
        literals |= set(re.findall(r'"([a-z][a-z_]*)"', path.read_text()))

    def raised(code: str) -> bool:
        # f"invalid_{name}" (query parameters, body fields): the field's name is the literal
        return code in literals or (code.startswith("invalid_") and code[len("invalid_"):] in literals)

    every = set().union(*_spec_codes().values())
    assert sorted(code for code in every if not raised(code)) == []


# -- against a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module: role both, an HS256 key (protected operations need a token),
    rate limits off (LivecommentsProcess' default), its own SQLite file."""
    tmp = tmp_path_factory.mktemp("openapi")
    proc = LivecommentsProcess(serve_args("--port", "0", storage=sqlite_url(tmp / "lc.db")), tmp / "lc.log",
                               env={"LIVECOMMENTS_AUTH_JWT_SECRET": SECRET})
    proc.start()
    yield proc.url
    proc.stop()


def test_the_server_serves_the_description(server: str) -> None:
    response = httpx.get(server + openapi.PATH, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == SPEC


def test_a_stream_starts_as_described(server: str) -> None:
    """The live stream is not fuzzed (its body never ends): its headers here, and its first
    frames, which the README's curl sample shows."""
    headers = SPEC["paths"]["/v1/videos/{video_id}/stream"]["get"]["responses"]["200"]["headers"]
    with httpx.stream("GET", server + "/v1/videos/abc/stream", timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for name, header in headers.items():
            assert response.headers[name] == header["schema"]["const"]
        seen = ""
        for chunk in response.iter_text():
            seen += chunk
            if "event: viewers" in seen and seen.endswith("\n\n"):
                break
    assert seen == 'retry: 2000\n\nevent: viewers\ndata: {"video_id":"abc","viewers":1}\n\n'
    readme = (ROOT / "README.md").read_text()
    sample = readme[readme.index("The viewer prints"):]
    sample = sample[sample.index("```\n") + 4:]
    assert sample.startswith(seen)


USER = mint(SECRET, "HS256", sub="fuzz-user", name="Fuzz")
MODERATOR = mint(SECRET, "HS256", sub="fuzz-mod", moderator=True)
EXPIRED = mint(SECRET, "HS256", sub="fuzz-late", ttl=-3600)  # past any leeway: 401 token_expired
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]

schema = schemathesis.openapi.from_dict(SPEC).exclude(
    # The live stream's body never ends, so a response cannot be read whole: its start is checked
    # above, its HEAD and the WebSocket (which answers a plain GET with 426) are fuzzed.
    path="/v1/videos/{video_id}/stream", method="GET",
)


def _token(case: Any) -> str | None:
    """A moderator's token (the moderation routes' successes), a user's (their 403s, and posts),
    an expired one, or none (then whatever the fuzzer made up: 401s), picked by the case's own
    content so that Hypothesis replays a failing case with the same one."""
    seed = zlib.crc32(repr((case.method, case.path_parameters, case.query, case.body)).encode())
    return (MODERATOR, USER, MODERATOR, EXPIRED, None)[seed % 5]


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_server_keeps_to_the_description(case: Any, server: str) -> None:
    """No 500, and every answer has a documented status, content type, headers and body."""
    token = _token(case)
    if token is not None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    case.call_and_validate(base_url=server, checks=CHECKS, timeout=TIMEOUT)

