"""The error vocabulary every layer shares: ApiError (a refusal in the JSON error shape) and the
stable public codes. Framework-free; the HTTP edge renders it (livecomments/edge/errors.py)."""

from __future__ import annotations

import math

import orjson

# Why a process cannot serve now, as stable public codes. The detail (addresses, driver
# errors) goes to the log, and into replies only with `expose_errors`.
BROKER_UNAVAILABLE = "broker_unavailable"
REGISTRY_UNAVAILABLE = "registry_unavailable"
STORAGE_UNAVAILABLE = "storage_unavailable"


def link_down_code(strategy_name: str) -> str:
    """The code for a strategy that is not ready: the dispatcher's registry, else the broker."""
    return REGISTRY_UNAVAILABLE if strategy_name == "dispatcher" else BROKER_UNAVAILABLE


def not_ready_body(code: str, detail: str, *, expose: bool) -> dict[str, str]:
    """/readyz's 503 body: the code always, the detail only when the operator exposes it."""
    return {"status": "not_ready", "reason": code, **({"detail": detail} if expose else {})}


CLIENT_GONE = 499  # nginx's status for "the client closed the connection first": logs and metrics only


class ApiError(Exception):
    """A refusal in the JSON error shape; `headers` go with it (WWW-Authenticate, Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def retry_after(wait: float) -> dict[str, str]:
    """Retry-After in whole seconds (RFC 9110), never 0: 0 invites an instant retry."""
    return {"Retry-After": str(max(1, math.ceil(wait)))}


def dumps(obj: object) -> str:
    """aiohttp's json_response(dumps=…) with orjson: every JSON reply goes through it."""
    return orjson.dumps(obj).decode()
