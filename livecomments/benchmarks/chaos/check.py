"""The checker: what every viewer received, and what posters were told, against storage."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from livecomments.benchmarks.chaos.clients import Ack, Viewer


async def stored_comments(session: aiohttp.ClientSession, writer_url: str, video: str) -> dict[int, str]:
    """seq -> text of every stored comment of a video, paging back from the head."""
    out: dict[int, str] = {}
    params: dict[str, Any] = {"limit": 200}
    while True:
        async with session.get(f"{writer_url}/v1/videos/{video}/comments", params=params) as resp:
            page = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"history of {video}: {resp.status} {page}")
        out.update({c["seq"]: c["text"] for c in page["comments"]})
        if page["next"] is None:
            return out
        params["before"] = page["next"]


def caught_up(viewer: Viewer, stored: dict[str, dict[int, str]]) -> bool:
    return set(stored[viewer.video]) <= set(viewer.received)


@dataclass
class ViewerFaults:
    video: str
    missing: int
    duplicated: int
    out_of_order: int
    resets: int
    first_missing: list[int]
    notes: list[str]

    @property
    def clean(self) -> bool:
        return not (self.missing or self.duplicated or self.out_of_order or self.resets)


def viewer_faults(viewer: Viewer, stored: dict[int, str]) -> ViewerFaults:
    got = viewer.received
    missing = sorted(set(stored) - set(got))
    return ViewerFaults(
        video=viewer.video,
        missing=len(missing),
        duplicated=len(got) - len(set(got)),
        out_of_order=sum(1 for a, b in zip(got, got[1:], strict=False) if b < a),
        resets=viewer.resets,
        first_missing=missing[:5],
        notes=viewer.reset_notes[:2],
    )


@dataclass
class Summary:
    strategy: str
    viewers: int = 0
    faulty_viewers: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    resets: int = 0
    acked: int = 0
    acked_not_stored: int = 0
    stored: int = 0
    stored_twice: int = 0  # one post (its text is unique) stored under two seqs: a retry duplicated
    rejected: int = 0
    gave_up: int = 0
    stalled_cut: bool = False
    failed_starts: int = 0  # process starts that failed and were retried (a supervisor's restarts)
    reconnects: int = 0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    worst: list[ViewerFaults] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.faulty_viewers == self.acked_not_stored == self.stored_twice == self.rejected
                == self.gave_up == self.failed_starts == 0 and self.stalled_cut)


def summarize(strategy: str, viewers: list[Viewer], acks: list[Ack], stored: dict[str, dict[int, str]],
              rejected: int, gave_up: int) -> Summary:
    summary = Summary(strategy, viewers=len(viewers), acked=len(acks), rejected=rejected, gave_up=gave_up)
    for viewer in viewers:
        faults = viewer_faults(viewer, stored[viewer.video])
        summary.missing += faults.missing
        summary.duplicated += faults.duplicated
        summary.out_of_order += faults.out_of_order
        summary.resets += faults.resets
        summary.reconnects += max(0, viewer.connects - 1)
        if not faults.clean:
            summary.faulty_viewers += 1
            summary.worst.append(faults)
    summary.worst.sort(key=lambda f: (f.missing + f.duplicated + f.out_of_order), reverse=True)
    summary.worst = summary.worst[:5]
    summary.acked_not_stored = sum(1 for a in acks if stored.get(a.video, {}).get(a.seq) != a.text)
    texts = Counter(text for comments in stored.values() for text in comments.values())
    summary.stored = sum(texts.values())
    summary.stored_twice = sum(n - 1 for n in texts.values() if n > 1)
    return summary


HEADER = ("| strategy | viewers | faulty viewers | missing | duplicated | out of order | resets | acked "
          "| acked not stored | stored twice | rejected / gave up | failed starts | stalled viewer cut | reconnects "
          "| peak RSS MB | s |")


def table(summaries: list[Summary]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for s in summaries:
        rss = ", ".join(f"{name} {mb:.0f}" for name, mb in s.peak_rss_mb.items())
        lines.append(
            f"| {s.strategy} | {s.viewers} | {s.faulty_viewers} | {s.missing} | {s.duplicated} | {s.out_of_order} "
            f"| {s.resets} | {s.acked} | {s.acked_not_stored} | {s.stored_twice} | {s.rejected} / {s.gave_up} "
            f"| {s.failed_starts} "
            f"| {'yes' if s.stalled_cut else 'NO'} | {s.reconnects} | {rss} | {s.seconds:.0f} |"
        )
    return "\n".join(lines)


def details(summaries: list[Summary]) -> str:
    out = []
    for s in summaries:
        for f in s.worst:
            out.append(f"- {s.strategy}: a viewer of {f.video}: missing {f.missing}, duplicated {f.duplicated}, "
                       f"out of order {f.out_of_order}, resets {f.resets}"
                       + (f" (missing seqs {', '.join(map(str, f.first_missing))}…)" if f.missing else "")
                       + "".join(f"; {note}" for note in f.notes))
    return "\n".join(out)
