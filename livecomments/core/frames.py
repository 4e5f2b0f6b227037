"""SSE frames as bytes, built once per comment and shared by every viewer.

Streams are written straight to the transport (see viewer.Viewer), so a fan-out also
frames its bytes as one HTTP/1.1 chunk: the chunk header depends only on the length,
so the chunked bytes are built once and shared by every viewer too.
"""

from __future__ import annotations

import json

from livecomments.model import Comment

PING = b": ping\n\n"


def comment_frame(comment: Comment) -> bytes:
    return b"id: %d\nevent: comment\ndata: %s\n\n" % (comment.seq, comment.to_json())


def delete_frame(entry: Comment) -> bytes:
    """A delete entry: its own seq is the id (a resume goes on after it); data names the comment removed."""
    data = json.dumps({"video_id": entry.video_id, "seq": entry.deletes}, separators=(",", ":"))
    return b"id: %d\nevent: delete\ndata: %s\n\n" % (entry.seq, data.encode())


def viewers_frame(video_id: str, viewers: int) -> bytes:
    """How many watch the video now, over every realtime process. No id: it is not part of
    the log, so a resume never replays it. video_id is validated ([A-Za-z0-9_-]): no escaping."""
    return b'event: viewers\ndata: {"video_id":"%s","viewers":%d}\n\n' % (video_id.encode(), viewers)


def reset_frame(oldest_seq: int) -> bytes:
    """In-band notice that the resume point is gone; the stream goes on from oldest_seq."""
    return b"event: reset\ndata: {\"oldest_seq\":%d}\n\n" % oldest_seq


def error_frame(code: str, message: str) -> bytes:
    """In-band refusal, in the JSON error shape: the stream ends after it, and EventSource retries."""
    data = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return b"event: error\ndata: %s\n\n" % data.encode()


def retry_frame(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


LAST_CHUNK = b"0\r\n\r\n"  # ends a chunked response cleanly


def chunk(data: bytes) -> bytes:
    """HTTP/1.1 chunked transfer framing of data."""
    return b"%x\r\n%s\r\n" % (len(data), data)
