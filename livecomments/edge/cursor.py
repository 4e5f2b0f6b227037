"""Opaque, tamper-evident history cursors: a seq bound to its video by an HMAC."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from livecomments.errors import ApiError

_SIG = 9
MAX_SEQ = 2**63 - 1  # BIGINT / SQLite INTEGER: a larger seq would overflow the driver


def signing_key(configured: str, stored: bytes) -> bytes:
    """The configured secret wins; else the database's own (made once, shared by every writer)."""
    return configured.encode() if configured else stored


def _sig(secret: bytes, video_id: str, seq: int) -> bytes:
    return hmac.new(secret, b"%s:%d" % (video_id.encode(), seq), hashlib.sha256).digest()[:_SIG]


def encode(secret: bytes, video_id: str, seq: int) -> str:
    raw = seq.to_bytes(8, "big") + _sig(secret, video_id, seq)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(secret: bytes, video_id: str, cursor: str) -> int:
    """The seq inside a cursor made by `encode` for this video; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 8 + _SIG and cursor.isascii():
        seq = int.from_bytes(raw[:8], "big")
        if seq <= MAX_SEQ and hmac.compare_digest(raw[8:], _sig(secret, video_id, seq)):
            return seq
    raise ApiError(400, "invalid_cursor", "cursor is not one this server gave out for this video")
