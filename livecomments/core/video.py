"""A watched video as the Hub's parts share it (`Video`), and the table of them (`Videos`).

A `Video` is a record: its viewers, when it was last active, and one small state object per
part of the Hub, each defined in that part's module and written only there:

- `watch`: the lifecycle's (core/lifecycle.py): watched or not, the head future, its task, the linger;
- `order`: the sequencer's (core/sequencer.py): the last seq delivered, held comments, the repair;
- `batch`: the fan-out's (core/fanout.py): frames waiting for the batch window, the comment rate.

`viewers` and the table's rows are changed by the lifecycle only (join, leave); `touched` by
the table itself. Every other part reads them and nothing else of another part's state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from livecomments.core.viewer import Viewer

if TYPE_CHECKING:
    from livecomments.core.fanout import Batch
    from livecomments.core.lifecycle import Watch
    from livecomments.core.sequencer import Order


class Video:
    __slots__ = ("video_id", "viewers", "touched", "watch", "order", "batch")

    def __init__(self, video_id: str, watch: Watch, order: Order, batch: Batch) -> None:
        self.video_id = video_id
        self.viewers: set[Viewer] = set()  # the lifecycle's to change (join, leave); the others read
        self.touched = 0  # the table's clock at the last join or comment: "recent activity" (head check)
        self.watch = watch
        self.order = order
        self.batch = batch


class Videos:
    """video id -> Video, for the videos this process has (or just had) viewers of.

    Runs on the loop only. The lifecycle adds and removes rows; the head check advances the
    clock (`tick`) that `touch` stamps activity with. Iteration yields the rows: nobody adds or
    removes one meanwhile (every caller iterates synchronously)."""

    def __init__(self) -> None:
        self._rows: dict[str, Video] = {}
        self.tick = 0
        # The hot path looks a video up once per comment: the dict's own method, no extra call.
        self.get: Callable[[str], Video | None] = self._rows.get

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._rows

    def __iter__(self) -> Iterator[Video]:
        return iter(self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, video: Video) -> None:
        video.touched = self.tick
        self._rows[video.video_id] = video

    def remove(self, video_id: str) -> None:
        del self._rows[video_id]

    def touch(self, video: Video) -> None:
        """A viewer joined or a comment arrived: the head check looks at this video for a while."""
        video.touched = self.tick

    def advance(self) -> int:
        self.tick += 1
        return self.tick

    def viewers(self) -> Iterator[Viewer]:
        """Every local viewer of every video (the heartbeat's round)."""
        for video in self._rows.values():
            yield from video.viewers

    def viewer_count(self) -> int:
        return sum(len(video.viewers) for video in self._rows.values())
