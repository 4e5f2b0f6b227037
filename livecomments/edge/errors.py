"""The one error shape of the HTTP edge, {"error": {"code", "message"}}: rendering and the error middleware."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from livecomments.errors import CLIENT_GONE, STORAGE_UNAVAILABLE, ApiError, dumps
from livecomments.storage.errors import (
    CommentDeleted,
    IdempotencyKeyReused,
    Overloaded,
    StorageError,
    StorageFull,
    StorageLost,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


ERROR_CODE = web.ResponseKey("error_code", str)  # kept on the response too: the metrics need not parse the body


def error_response(status: int, code: str, message: str) -> web.Response:
    response = web.json_response({"error": {"code": code, "message": message}}, status=status, dumps=dumps)
    response[ERROR_CODE] = code
    return response


# What storage refuses, as (status, code, public message, Retry-After seconds or None).
# The public message is fixed: the driver's detail (addresses, SQL states) goes to the log.
STORAGE_REFUSALS: dict[type[StorageError], tuple[int, str, str, int | None]] = {
    StorageUnavailable: (503, STORAGE_UNAVAILABLE, "storage cannot be reached; nothing was stored", 1),
    StorageFull: (503, STORAGE_UNAVAILABLE, "storage is full (no space left to write); nothing was stored", 10),
    StorageLost: (503, STORAGE_UNAVAILABLE,
                  "the server lost its database file (deleted or replaced while running); nothing was stored", 30),
    Overloaded: (503, "overloaded", "too many posts are waiting to be stored; nothing was stored", 1),
    IdempotencyKeyReused: (422, "idempotency_key_reused", "this Idempotency-Key was first used for another comment", None),
    # The same code (the key is used up; clients and the metrics' fixed label set know it), its own message.
    CommentDeleted: (422, "idempotency_key_reused",
                     "the comment first posted with this Idempotency-Key was deleted; nothing was stored", None),
}


def storage_error_response(e: StorageError) -> web.Response:
    status, code, message, retry_after = STORAGE_REFUSALS.get(type(e), (503, STORAGE_UNAVAILABLE, "storage failed", 1))
    response = error_response(status, code, message)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure of `handler` as the one error shape (the internal app's only middleware; the
    public app's edge_middleware, edge/access.py, calls error_answer itself)."""
    try:
        return await handler(request)
    except Exception as e:
        return error_answer(request, e)


def error_answer(request: web.Request, e: Exception) -> web.StreamResponse:
    """The answer to a request whose handling raised `e`; raises `e` again when it is no error (a redirect)."""
    if isinstance(e, ApiError):
        response = error_response(e.status, e.code, e.message)
        response.headers.update(e.headers)
        return response
    if isinstance(e, StorageError):
        if isinstance(e, StorageUnavailable):
            log.warning("%s %s: %s", request.method, request.path, e)
        return storage_error_response(e)
    if isinstance(e, web.HTTPException):
        if e.status < 400:
            raise e
        return error_response(e.status, _HTTP_CODES.get(e.status, "http_error"), e.reason)
    if isinstance(e, ConnectionResetError):  # the client went away mid-answer: routine, not a server error
        log.debug("client went away during %s %s", request.method, request.path)
        return error_response(CLIENT_GONE, "client_gone", "the client closed the connection")  # never sent
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=e)
    return error_response(500, "internal", "internal server error")
