"""Signed pushes between processes (framework-free: the pusher and the deliver endpoint share it).

A push is `X-Livecomments-Timestamp: <unix seconds>` and `X-Livecomments-Signature:
hex(HMAC-SHA256(secret, timestamp + "." + body))`. A request older or newer than MAX_SKEW,
or whose signature was already accepted within that window (a replay), is refused.

The headers are checked in two steps so the receiver can refuse before it reads a body:
`Verifier.precheck` (present, well-formed, fresh) costs nothing; `Verifier.check` (the
HMAC over the body, then the replay check) needs the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import deque

PATH = "/internal/v1/deliver"
TIMESTAMP = "X-Livecomments-Timestamp"
SIGNATURE = "X-Livecomments-Signature"
MAX_SKEW = 30.0
# A push body is at most this (or a few of the largest comments, if bigger). Pushers keep
# their coalesced batches under it; the deliver endpoint refuses anything larger unread.
MAX_PUSH_BYTES = 1 << 20

_TIMESTAMP_FORM = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
_SIGNATURE_FORM = re.compile(r"[0-9a-f]{64}")


def push_body_limit(max_text: int, max_author: int) -> int:
    """Bytes a deliver body may have: MAX_PUSH_BYTES, or room for 4 of the largest comments.

    A stored comment as JSON is at most 6 bytes per character (a control character
    escaped as \\u0001; anything else is at most 4 bytes of UTF-8), plus its fixed fields.
    """
    largest = 6 * (max_text + max_author) + 256
    return max(MAX_PUSH_BYTES, 4 * largest)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes) -> dict[str, str]:
    timestamp = f"{time.time():.3f}"
    return {TIMESTAMP: timestamp, SIGNATURE: signature(secret, timestamp, body),
            "Content-Type": "application/json"}


class Verifier:
    """Checks signature and freshness, and remembers accepted signatures for the window.

    The replay memory is a set plus a deque in expiry order: each check forgets what
    expired from the deque's head, so a check is O(1) amortized however many are held.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._seen: set[str] = set()
        self._expiry: deque[tuple[float, str]] = deque()  # (forget after, signature), oldest first

    def precheck(self, timestamp: str | None, sig: str | None) -> str:
        """'' when the headers could belong to an authentic, fresh push, else why not."""
        if not self._secret:
            return "this server has no cluster secret: pushes are refused"
        if not timestamp or not sig:
            return "unsigned request"
        if not _TIMESTAMP_FORM.fullmatch(timestamp) or not _SIGNATURE_FORM.fullmatch(sig):
            return "malformed signature headers"
        if not abs(time.time() - float(timestamp)) <= MAX_SKEW:
            return "stale request"
        return ""

    def check(self, timestamp: str | None, sig: str | None, body: bytes) -> str:
        """'' when the request is authentic, fresh and not a replay, else why not."""
        problem = self.precheck(timestamp, sig)
        if problem:
            return problem
        assert timestamp is not None and sig is not None  # precheck refused them otherwise
        expected = signature(self._secret, timestamp, body)
        if not hmac.compare_digest(sig, expected):
            return "bad signature"
        now = time.time()
        self._forget(now)
        if sig in self._seen:
            return "replayed request"
        self._seen.add(sig)
        # Remembered until its timestamp leaves the window: after that precheck refuses it.
        # Clocks make timestamps arrive out of order by up to MAX_SKEW, so the deque holds
        # the later of the two bounds; forgetting late is safe, forgetting early is not.
        self._expiry.append((max(float(timestamp), now) + MAX_SKEW, sig))
        return ""

    def _forget(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] < now:
            self._seen.discard(expiry.popleft()[1])

    def __len__(self) -> int:
        return len(self._seen)
