"""How both backends read a video's log rows back into entries (model.Comment)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from livecomments.model import Comment

COLUMNS = "video_id, seq, author, text, created_at, user_id, deletes, deleted"
PREFIXED = ", ".join("c." + column for column in COLUMNS.split(", "))
# History pages show live comments only: neither deleted ones nor the delete entries.
LIVE = "AND deletes IS NULL AND deleted = FALSE"


def row_entry(r: Sequence[Any]) -> Comment:
    return Comment(video_id=r[0], seq=r[1], author=r[2], text=r[3], created_at=r[4], user=r[5],
                   deletes=r[6] or 0, deleted=bool(r[7]))
