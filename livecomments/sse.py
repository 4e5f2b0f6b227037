"""SSE frames as bytes, built once per comment and shared by every viewer.

Streams are written straight to the transport (see viewer.Viewer), so a fan-out also
frames its bytes as one HTTP/1.1 chunk: the chunk header depends only on the length,
so the chunked bytes are built once and shared by every viewer too.
"""

from __future__ import annotations

from livecomments.model import Comment

PING = b": ping\n\n"


def comment_frame(comment: Comment) -> bytes:
    return b"id: %d\nevent: comment\ndata: %s\n\n" % (comment.seq, comment.to_json())


def reset_frame(oldest_seq: int) -> bytes:
    """In-band notice that the resume point is gone; the stream goes on from oldest_seq."""
    return b"event: reset\ndata: {\"oldest_seq\":%d}\n\n" % oldest_seq


def retry_frame(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


LAST_CHUNK = b"0\r\n\r\n"  # ends a chunked response cleanly


def chunk(data: bytes) -> bytes:
    """HTTP/1.1 chunked transfer framing of data."""
    return b"%x\r\n%s\r\n" % (len(data), data)
