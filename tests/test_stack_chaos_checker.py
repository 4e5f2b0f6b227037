"""The fault suite's checker (livecomments/benchmarks/chaos/check.py) counts each kind of fault it reports:
an all-zero table means something only if a broken run would not give one."""

from __future__ import annotations

from livecomments.benchmarks.chaos.check import summarize
from livecomments.benchmarks.chaos.clients import Ack, Viewer

STORED = {"a": {1: "p0-0", 2: "p0-1", 3: "p0-2", 4: "p1-0"}, "b": {1: "p1-1", 2: "p1-1"}}


def viewer(video: str, received: list[int], resets: int = 0) -> Viewer:
    return Viewer(video, ["http://unused"], pick=0, received=received, resets=resets)


def test_a_clean_run_is_all_zero():
    viewers = [viewer("a", [1, 2, 3, 4]), viewer("b", [1, 2])]
    acks = [Ack("a", 1, "p0-0"), Ack("a", 4, "p1-0")]
    s = summarize("x", viewers, acks, {"a": STORED["a"], "b": {1: "p1-1", 2: "p1-2"}}, rejected=0, gave_up=0)
    assert (s.faulty_viewers, s.missing, s.duplicated, s.out_of_order, s.resets) == (0, 0, 0, 0, 0)
    assert (s.acked_not_stored, s.stored_twice, s.stored) == (0, 0, 6)


def test_each_fault_is_counted():
    viewers = [
        viewer("a", [1, 2, 4]),  # 3 missing
        viewer("a", [1, 2, 2, 3, 4]),  # 2 twice
        viewer("a", [1, 3, 2, 4]),  # out of order
        viewer("a", [3, 4], resets=1),  # told to skip, and 1, 2 missing
        viewer("b", [1, 2]),
    ]
    acks = [Ack("a", 1, "p0-0"), Ack("a", 9, "p0-9"), Ack("b", 1, "other text")]
    s = summarize("x", viewers, acks, STORED, rejected=1, gave_up=2)
    assert s.faulty_viewers == 4
    assert (s.missing, s.duplicated, s.out_of_order, s.resets) == (3, 1, 1, 1)
    assert s.acked_not_stored == 2  # seq 9 never stored; seq 1 of b holds another post's text
    assert s.stored_twice == 1  # "p1-1" under two seqs: a retried post stored again
    assert not s.ok and (s.rejected, s.gave_up) == (1, 2)
