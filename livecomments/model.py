"""Comments and the validators that turn untrusted input into them.

Text and author are NFC-normalized (one spelling per visible string, so limits and
comparisons mean the same for every client). Bidi embedding, override and isolate
controls (U+202A-U+202E, U+2066-U+2069) are stripped: one unbalanced override in a
comment would reorder what the page shows after it, and nothing legitimate needs them
(the implicit marks U+200E/U+200F stay). A text or author with nothing visible left
(only whitespace, format characters such as zero-width spaces, combining marks, or blank
letters such as U+3164) is refused with 422 like an empty one. Control characters other
than tab and newlines are refused in text, and every control character in an author.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson

from livecomments.errors import ApiError

VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# Categories that render nothing on their own: controls, format characters (zero-width
# space, joiners, tags), separators, and combining marks with no base.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols that fonts draw as blanks (used to fake empty names).
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Control characters (category Cc) refused: in text all but tab and newlines, in an author all.
TEXT_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
AUTHOR_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
ASCII_INVISIBLE = "".join(map(chr, range(0x21))) + "\x7f"  # spaces and controls: the ASCII that shows nothing


@dataclass(slots=True, frozen=True)
class NewComment:
    video_id: str
    author: str
    text: str
    user: str | None = None  # the poster's token `sub`, kept for moderation; None when posting is open


@dataclass(slots=True, frozen=True)
class Comment:
    """An entry of a video's ordered log (seq contiguous per video): a comment, a delete
    entry (`deletes` > 0: the seq of the comment it removes; its SSE `id:` is its own seq),
    or, read back from storage only, a deleted comment's place (`deleted`: advances seq,
    shows nothing). `user` never leaves the process: the public JSON has the author only."""

    video_id: str
    seq: int
    author: str
    text: str
    created_at: float
    user: str | None = None
    deletes: int = 0
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.deletes:
            return {"video_id": self.video_id, "seq": self.seq, "deletes": self.deletes, "created_at": self.created_at}
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
        """Raises ValueError/KeyError/TypeError if obj is not a comment's (or a delete entry's) dict."""
        if "deletes" in obj:
            deletes = int(obj["deletes"])
            if deletes < 1:
                raise ValueError("deletes must be a seq")
            return cls(str(obj["video_id"]), int(obj["seq"]), "", "", float(obj["created_at"]), deletes=deletes)
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
    if text.isascii() and author.isascii():  # most posts: the same checks, in a few string methods
        return _ascii_comment(video_id, text.strip(), author.strip(), max_text, max_author)
    _check_utf8(text, "text")
    _check_utf8(author, "author")
    text = _normalize(text)
    author = _normalize(author)
    _check_controls(text, "text", TEXT_CONTROLS)
    _check_controls(author, "author", AUTHOR_CONTROLS)
    if not _visible(text):
        raise ApiError(422, "text_empty", "text is empty or invisible")
    if len(text) > max_text:
        raise ApiError(422, "text_too_long", f"text is {len(text)} chars, max {max_text}")
    if not _visible(author):
        raise ApiError(422, "author_empty", "author is empty or invisible")
    if len(author) > max_author:
        raise ApiError(422, "author_too_long", f"author is {len(author)} chars, max {max_author}")
    return NewComment(video_id=video_id, author=author, text=text)


def _ascii_comment(video_id: str, text: str, author: str, max_text: int, max_author: int) -> NewComment:
    """parse_new_comment for ASCII text and author, stripped: NFC leaves ASCII as it is and it holds no
    bidi control, so what is left to check is control characters and that something is visible
    (a character from ! to ~: ASCII's only other characters are spaces and controls)."""
    _check_controls(text, "text", TEXT_CONTROLS)
    _check_controls(author, "author", AUTHOR_CONTROLS)
    if not text.strip(ASCII_INVISIBLE):
        raise ApiError(422, "text_empty", "text is empty or invisible")
    if len(text) > max_text:
        raise ApiError(422, "text_too_long", f"text is {len(text)} chars, max {max_text}")
    if not author.strip(ASCII_INVISIBLE):
        raise ApiError(422, "author_empty", "author is empty or invisible")
    if len(author) > max_author:
        raise ApiError(422, "author_too_long", f"author is {len(author)} chars, max {max_author}")
    return NewComment(video_id=video_id, author=author, text=text)


def display_name(name: str, max_author: int) -> str:
    """A name from elsewhere (a token's `name` or `sub`) as an author: normalized like a posted
    one, and cut to `max_author` characters rather than refused (its owner cannot shorten it)."""
    return _normalize(_normalize(name)[:max_author])


def _normalize(value: str) -> str:
    return unicodedata.normalize("NFC", BIDI_CONTROLS.sub("", value)).strip()


def _visible(value: str) -> bool:
    return any(
        ch not in _BLANK_CHARACTERS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in value
    )


def _check_controls(value: str, field: str, refused: re.Pattern[str]) -> None:
    found = refused.search(value)
    if found:
        raise ApiError(422, f"invalid_{field}", f"{field} contains control character U+{ord(found.group()):04X}")


def _check_utf8(value: str, field: str) -> None:
    # JSON may carry lone surrogates ("\ud800") that are not valid UTF-8 text.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, f"invalid_{field}", f"{field} is not valid UTF-8") from None
