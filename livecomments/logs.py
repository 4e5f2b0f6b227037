"""Process logging: one line per event, as text or JSON, and the access log's logger.

One line per event because operators grep, tail and ship logs line by line: a traceback is
folded into its event's line (text: newlines shown as `\\n`; JSON: an `exc` field), never
spread over thirty lines that a shipper would turn into thirty events.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

ACCESS_LOGGER = "livecomments.edge.access"
# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or ""


def _quoted(value: object) -> str:
    text = str(value)
    plain = text and text.isprintable() and not any(c in text for c in ' "=')
    return text if plain else orjson.dumps(text).decode()  # quoted, escaped: one value, one line


class TextFormatter(logging.Formatter):
    """`2026-11-23T17:42:22.063Z INFO livecomments.edge.app: message key=value …` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        extra = " ".join(f"{k}={_quoted(v)}" for k, v in _fields(record).items())
        if extra:
            line += " " + extra
        exc = _exception_text(self, record)
        if exc:
            line += " | " + exc
        return line.replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (Unix seconds), level, logger, msg, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(), **_fields(record),
        }
        exc = _exception_text(self, record)
        if exc:
            event["exc"] = exc
        return orjson.dumps(event, default=str).decode()


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once for the process (stderr; stdout carries the ready line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
