"""Sharded pub/sub (SPUBLISH/SSUBSCRIBE) on a real local 3-master Redis Cluster."""

from __future__ import annotations

import asyncio

from livecomments.brokers.redis import RedisBroker
from livecomments.strategies.partitioned import channel_of
from tests.fixtures.processes import serve_args
from tests.fixtures.redis_cluster import RedisCluster
from tests.helpers import metric, post
from tests.sse import open_stream
from tests.test_redis_broker import Recorder


def shard_channels(cluster: RedisCluster) -> list[set[str]]:
    return [set(cluster.cli(node.port, "pubsub", "shardchannels").split()) for node in cluster.nodes]


async def test_sharded_channels_spread_over_masters_in_order(redis_cluster):
    rec = Recorder()
    sub, pub = RedisBroker(redis_cluster.url), RedisBroker(redis_cluster.url)
    await sub.start(rec.on_message, rec.on_reset)
    await pub.start(None, lambda: None)
    try:
        channels = [f"lc:p:{i}" for i in range(16)]
        await sub.subscribe(*channels)
        per_node = shard_channels(redis_cluster)
        assert all(per_node) and set().union(*per_node) == set(channels)  # every master holds some
        assert redis_cluster.cli(redis_cluster.nodes[0].port, "pubsub", "channels").split() == []
        await asyncio.gather(*(pub.publish(channels[i % 16], b"%d" % i) for i in range(320)))
        got = await rec.wait_for(320)
        for channel in channels:
            seq = [int(d) for c, d in got if c == channel]
            assert seq == sorted(seq) and len(seq) == 20
        await sub.unsubscribe(*channels[:8])
        assert set().union(*shard_channels(redis_cluster)) == set(channels[8:])
    finally:
        await sub.close()
        await pub.close()


async def test_partitioned_strategy_end_to_end_over_the_cluster(redis_cluster, spawn, session):
    writer, rt = (spawn(*serve_args("--partitions", "0", role=role, strategy="partitioned", transport=redis_cluster.url))
                  for role in ("writer", "realtime"))
    videos = [f"cv{i}" for i in range(9)]  # one channel per video: lc:v:<id>, spread by slot
    streams = [await open_stream(session, rt.url, v) for v in videos]
    per_node = shard_channels(redis_cluster)
    assert set().union(*per_node) == {channel_of(v, 0) for v in videos}
    assert sum(1 for chans in per_node if chans) >= 2
    for i in range(3):
        for v in videos:
            await post(session, writer.url, v, text=f"{v}-{i}")
    for v, stream in zip(videos, streams, strict=True):
        assert [c["text"] for c in await stream.comments(3)] == [f"{v}-{i}" for i in range(3)]
    assert await metric(session, rt.url, "livecomments_subscriptions") == len(videos)
    assert await metric(session, rt.url, "livecomments_comments_delivered_total") == 27
