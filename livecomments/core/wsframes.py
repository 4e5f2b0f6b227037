"""WebSocket messages as wire bytes, built once and shared by every WebSocket viewer.

A server's frames are not masked (RFC 6455 §5.1) and, with permessage-deflate off (the
edge never negotiates it), a text frame is a fixed header plus the payload: the same bytes
are right for every connection. So a comment's WebSocket form is built once, next to its
SSE form (core/viewer.py `build_frame`), and the fan-out writes those bytes to each
WebSocket viewer's transport as it writes the SSE bytes to each SSE viewer's.

Each message is one JSON text frame with a `type`: `comment` and `delete` carry the log
entry's own JSON (its `seq` is the resume point, `?since=`), `viewers`, `reset`, `error`,
and the answers to a post, `ack` and an `error` naming the post's `id`.
"""

from __future__ import annotations

import struct

import orjson

from livecomments.model import Comment

TEXT, CLOSE = 0x1, 0x8  # opcodes
GOING_AWAY = 1001  # the server is shutting down
PING = b"\x89\x00"  # an empty ping: the heartbeat's, answered by every client with a pong


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final, unmasked frame carrying payload."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def text(obj: object) -> bytes:
    return frame(orjson.dumps(obj))


def entry_message(comment: Comment) -> bytes:
    """A comment (`type` comment) or a delete entry (`type` delete; `deletes` names the comment
    removed): the entry's own JSON with its type first, so a client reads `seq` the same way."""
    body = comment.to_json()
    kind = b'{"type":"delete",' if comment.deletes else b'{"type":"comment",'
    return frame(kind + body[1:])


def viewers_message(video_id: str, viewers: int) -> bytes:
    """Not part of the log (no seq): a resume never replays it. video_id is validated: no escaping."""
    return frame(b'{"type":"viewers","video_id":"%s","viewers":%d}' % (video_id.encode(), viewers))


def reset_message(oldest_seq: int) -> bytes:
    """The resume point is gone from storage; the stream goes on from oldest_seq."""
    return frame(b'{"type":"reset","oldest_seq":%d}' % oldest_seq)


def error_message(code: str, message: str, post_id: object = None, *, of_post: bool = False) -> bytes:
    """The JSON error shape with a type; an answer to a post names its id (null when it had none)."""
    body: dict[str, object] = {"type": "error", "error": {"code": code, "message": message}}
    if of_post:
        body["id"] = post_id
    return text(body)


def ack_message(post_id: str, seq: int) -> bytes:
    return text({"type": "ack", "id": post_id, "seq": seq})


def close_frame(code: int) -> bytes:
    return frame(struct.pack("!H", code), CLOSE)
