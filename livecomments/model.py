"""Comments and the validators that turn untrusted input into them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from livecomments.errors import ApiError

VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(slots=True, frozen=True)
class NewComment:
    video_id: str
    author: str
    text: str


@dataclass(slots=True, frozen=True)
class Comment:
    video_id: str
    seq: int
    author: str
    text: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "seq": self.seq,
            "author": self.author,
            "text": self.text,
            "created_at": self.created_at,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Comment:
        """Decode what a peer process sent; raises ValueError/KeyError/TypeError if malformed."""
        return cls.from_dict(orjson.loads(data))

    @classmethod
    def from_dict(cls, obj: Any) -> Comment:
        """Raises ValueError/KeyError/TypeError if obj is not a comment's dict."""
        return cls(
            video_id=str(obj["video_id"]),
            seq=int(obj["seq"]),
            author=str(obj["author"]),
            text=str(obj["text"]),
            created_at=float(obj["created_at"]),
        )


def parse_video_id(raw: str) -> str:
    if not VIDEO_ID.fullmatch(raw):
        raise ApiError(400, "invalid_video_id", "video_id must be 1-64 of [A-Za-z0-9_-]")
    return raw


def parse_seq(raw: str, what: str) -> int:
    """A non-negative seq from a header or query value (Last-Event-ID, since)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "invalid_last_event_id", f"{what} must be a non-negative integer")
    return int(raw)


def parse_new_comment(
    video_id: str, body: object, *, max_text: int, max_author: int
) -> NewComment:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "body must be a JSON object")
    text = body.get("text")
    author = body.get("author")
    if not isinstance(text, str):
        raise ApiError(422, "invalid_text", "text must be a string")
    if not isinstance(author, str):
        raise ApiError(422, "invalid_author", "author must be a string")
    text = text.strip()
    author = author.strip()
    _check_utf8(text, "text")
    _check_utf8(author, "author")
    if not text:
        raise ApiError(422, "text_empty", "text is empty")
    if len(text) > max_text:
        raise ApiError(422, "text_too_long", f"text is {len(text)} chars, max {max_text}")
    if not author:
        raise ApiError(422, "author_empty", "author is empty")
    if len(author) > max_author:
        raise ApiError(422, "author_too_long", f"author is {len(author)} chars, max {max_author}")
    return NewComment(video_id=video_id, author=author, text=text)


def _check_utf8(value: str, field: str) -> None:
    # JSON may carry lone surrogates ("\ud800") that are not valid UTF-8 text.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, f"invalid_{field}", f"{field} is not valid UTF-8") from None
    if "\x00" in value:
        raise ApiError(422, f"invalid_{field}", f"{field} contains a NUL character")
