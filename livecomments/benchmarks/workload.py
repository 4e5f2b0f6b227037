"""The workload model shared by the strategy benchmark and the simulator.

V videos with Zipf popularity p_i ∝ 1/(i+1)^s; W viewers, viewer j watching a video drawn
from p (seeded, so the benchmark and the simulator see the very same viewers); comments
posted at a total rate R, each on a video drawn from the same p. Viewers are routed to K
realtime servers by the load balancer's policy, in connection order:

- round-robin: viewer j goes to server j mod K (nginx's default, and the benchmark's rotation);
- hash: a video's viewers all go to HashRing(nodes).node_for(video_id), nginx's
  `hash $video_id consistent`;
- bounded: the same ring with HAProxy's bounded loads (`hash-balance-factor`, ring.bounded_placement):
  no server above balance_factor × the mean, so a hot video spills over the next servers on the ring.

numpy keeps 10,000,000 viewers to a few arrays of int32, so the simulator can sample them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from livecomments.ops.ring import HashRing, bounded_placement

POLICIES = ("round-robin", "hash", "bounded")
BALANCE_FACTOR = 1.25  # HAProxy's hash-balance-factor 125
IntArray = npt.NDArray[np.int64]


def video_id(index: int) -> str:
    return f"v{index}"


def node_names(servers: int) -> list[str]:
    """Addresses for simulated servers, written as nginx's upstream would list them."""
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8080" for i in range(servers)]


@dataclass(frozen=True)
class Workload:
    videos: int
    viewers: int
    rate: float = 50.0
    zipf: float = 1.0
    seed: int = 1

    @cached_property
    def popularity(self) -> npt.NDArray[np.float64]:
        weights = 1.0 / np.arange(1, self.videos + 1, dtype=np.float64) ** self.zipf
        return np.asarray(weights / weights.sum(), dtype=np.float64)

    @cached_property
    def viewer_videos(self) -> IntArray:
        """The video each viewer watches, in connection order."""
        rng = np.random.default_rng(self.seed)
        return rng.choice(self.videos, size=self.viewers, p=self.popularity).astype(np.int64)

    @cached_property
    def viewers_per_video(self) -> IntArray:
        return np.bincount(self.viewer_videos, minlength=self.videos).astype(np.int64)

    def posts(self, count: int) -> IntArray:
        """The videos of the first `count` comments, in posting order (its own seeded stream)."""
        rng = np.random.default_rng(self.seed + 1_000_003)
        return rng.choice(self.videos, size=count, p=self.popularity).astype(np.int64)

    def route(self, policy: str, nodes: Sequence[str], balance_factor: float = BALANCE_FACTOR) -> IntArray:
        """The server index of each viewer."""
        if policy == "round-robin":
            return np.arange(self.viewers, dtype=np.int64) % len(nodes)
        if policy == "hash":
            return self.placement(nodes)[self.viewer_videos]
        if policy == "bounded":
            keys = [video_id(v) for v in range(self.videos)]
            placed = bounded_placement(HashRing(nodes), keys, self.viewer_videos.tolist(), balance_factor)
            return np.asarray(placed, dtype=np.int64)
        raise ValueError(f"unknown policy {policy!r}: use {', '.join(POLICIES)}")

    def placement(self, nodes: Sequence[str]) -> IntArray:
        """The server the hash policy gives each video."""
        ring = HashRing(nodes)
        index = {node: i for i, node in enumerate(nodes)}
        return np.array([index[ring.node_for(video_id(v))] for v in range(self.videos)], dtype=np.int64)
