"""The dynamodb:// storage on a real DynamoDB-compatible server (moto, tests/fixtures/dynamodb.py):
the storage contract and moderation suites, one and two writers on one table set, then what is
DynamoDB's own: a writer killed mid-batch, an endpoint frozen and back, the URL forms."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest

from livecomments.backends import missing_driver, open_storage
from livecomments.model import NewComment
from livecomments.storage import dynamodb_client, dynamodb_keys
from livecomments.storage.base import Storage
from livecomments.storage.dynamodb_client import parse_url
from livecomments.storage.errors import StorageUnavailable
from tests import test_storage_contract as contract
from tests import test_storage_moderation as moderation
from tests.fixtures.dynamodb import DynamoServer

# Every case of the two contract suites that runs on a `storage` fixture, here on DynamoDB's.
for _suite in (contract, moderation):
    for _name, _test in vars(_suite).items():
        if _name.startswith("test_") and inspect.isfunction(_test) and "storage" in inspect.signature(_test).parameters:
            globals()[_name] = _test


@pytest.fixture(params=["dynamodb", "dynamodb-two-writers"])
async def storage(request: pytest.FixtureRequest, dynamodb_server: DynamoServer) -> AsyncIterator[Any]:
    url = dynamodb_server.url()
    two = request.param.endswith("two-writers")
    stores = [await open_storage(url) for _ in range(2 if two else 1)]
    yield contract.TwoWriters(*stores) if two else stores[0]
    for store in stores:
        await store.close()


# A writer of its own process: batches of 256 posts (group_commit.MAX_BATCH) to one video, without
# end, so it is always mid-batch when it is killed however slow the machine is.
WRITER = textwrap.dedent("""
    import asyncio, itertools, sys
    from livecomments.backends import open_storage
    from livecomments.model import NewComment

    async def main():
        store = await open_storage(sys.argv[1])
        n = itertools.count()
        while True:
            await asyncio.gather(*(store.add(NewComment("v", "doomed", f"d{next(n)}")) for _ in range(256)))

    asyncio.run(main())
""")


async def _entries_by(store: Storage, author: str) -> int:
    return sum(c.author == author for c in await store.since("v", 0, 10_000))


async def test_a_writer_killed_mid_batch_leaves_no_hole_and_no_seq_twice(dynamodb_server: DynamoServer) -> None:
    url = dynamodb_server.url()
    survivor = await open_storage(url)
    doomed = subprocess.Popen([sys.executable, "-c", WRITER, url])
    try:
        acked = list(await asyncio.gather(*(survivor.add(NewComment("v", "survivor", f"s{i}")) for i in range(5))))
        async with asyncio.timeout(30):  # until the other writer is well into its batches
            while not await survivor.since("v", 40, 1):
                assert doomed.poll() is None, "the writer finished before it was killed"
                acked.append(await survivor.add(NewComment("v", "survivor", f"s{len(acked)}")))
        doomed.kill()
        doomed.wait(timeout=10)
        assert await _entries_by(survivor, "doomed") > 0  # it had stored batches before it was killed
        acked += await asyncio.gather(*(survivor.add(NewComment("v", "survivor", f"after{i}")) for i in range(10)))
        restarted = await open_storage(url)
        try:
            acked += await asyncio.gather(*(restarted.add(NewComment("v", "restarted", f"r{i}")) for i in range(10)))
            log = await restarted.since("v", 0, 10_000)
            assert [c.seq for c in log] == list(range(1, len(log) + 1))  # no hole, no seq twice
            assert await restarted.last_seq("v") == await survivor.last_seq("v") == len(log)
            stored = {c.seq: c for c in log}
            assert all(stored[c.seq].text == c.text for c in acked)  # every acknowledged post is where it was told
            assert len({c.seq for c in acked}) == len(acked)
        finally:
            await restarted.close()
    finally:
        doomed.kill()
        doomed.wait(timeout=10)
        await survivor.close()


async def test_a_frozen_endpoint_is_unavailable_then_recovers(own_dynamodb_server: DynamoServer) -> None:
    store = await open_storage(own_dynamodb_server.url())
    try:
        assert (await store.add(NewComment("v", "a", "before"))).seq == 1
        own_dynamodb_server.halt()
        try:
            async with asyncio.timeout(20):
                assert not await store.healthy()
                with pytest.raises(StorageUnavailable):
                    await store.add(NewComment("v", "a", "during"))
                with pytest.raises(StorageUnavailable):
                    await store.since("v", 0, 10)
        finally:
            own_dynamodb_server.resume()
        async with asyncio.timeout(20):
            assert await store.healthy()
            after = await store.add(NewComment("v", "a", "after"))
        log = await store.since("v", 0, 10)
        assert [c.seq for c in log] == list(range(1, after.seq + 1)) and log[0].text == "before"
    finally:
        await store.close()


async def test_the_server_runs_on_dynamodb(start_server: Any, session: Any, dynamodb_url: str) -> None:
    from tests.helpers import history, post
    from tests.sse import open_stream

    base = await start_server(storage=dynamodb_url)
    stream = await open_stream(session, base, "dy")
    for i in range(3):
        await post(session, base, "dy", f"c{i}")
    assert [c["seq"] for c in await stream.comments(3)] == [1, 2, 3]
    page = await history(session, base, "dy", limit=2)
    assert [c["seq"] for c in page["comments"]] == [3, 2]
    assert [c["seq"] for c in (await history(session, base, "dy", before=page["next"]))["comments"]] == [1]


def test_url_forms() -> None:
    assert parse_url("dynamodb://127.0.0.1:8000/lc") == ("http://127.0.0.1:8000", "lc")
    assert parse_url("dynamodbs://scylla.example:8043/lc") == ("https://scylla.example:8043", "lc")
    assert parse_url("dynamodb:///prod_lc") == (None, "prod_lc")
    for bad in ("dynamodb://127.0.0.1:8000", "dynamodb:///", "dynamodb:///a/b"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert missing_driver("dynamodb:///lc") == ""  # the driver is installed here


async def test_housekeeping_forgets_only_what_ended(storage: Any) -> None:
    """The moderation suite's case, with the ban rows counted in DynamoDB's table (a Scan)."""
    await storage.ban("v", "u-bob", 60)
    await storage.ban("v", "u-eve", 0.2)
    await storage.claim_slot("v", "u:ana", 30)
    await moderation._until(lambda: moderation._not_banned(storage, "v", "u-eve"))
    await storage.forget_expired()
    assert (await storage.post_policy("v", "u-bob"))[0] is not None  # not ended: kept
    assert await storage.claim_slot("v", "u:ana", 30) > 0
    store = getattr(storage, "stores", (storage,))[0]
    rows = await store._client.scan(TableName=store._t["bans"], Select="COUNT", ConsistentRead=True)
    assert rows["Count"] == 1  # the ended ban is gone from the table


@pytest.fixture
def quick_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen endpoint is told in ~2 s (two attempts of 1 s), a dead claimant's key taken over after 1 s."""
    monkeypatch.setattr(dynamodb_client, "READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr(dynamodb_keys, "LEASE_S", 1.0)


async def test_a_retry_after_a_lost_answer_gets_the_stored_comment(
    own_dynamodb_server: DynamoServer, quick_timeouts: None
) -> None:
    """The entry's PutItem reaches the endpoint, which freezes before it answers: the post fails
    (503), yet once the endpoint is back its write lands. The retry under the same key gets that
    comment, and nothing is stored twice."""
    store = await open_storage(own_dynamodb_server.url())
    try:
        def freeze_at_the_entry(request: Any, **_: Any) -> None:
            if b"_comments" in request.body and b"idem_key" in request.body:
                own_dynamodb_server.halt()  # the request is sent to a frozen server: its answer never comes

        store._client.meta.events.register("before-send.dynamodb.PutItem", freeze_at_the_entry)
        try:
            with pytest.raises(StorageUnavailable):
                await store.add(NewComment("v", "a", "once"), "k1")
        finally:
            store._client.meta.events.unregister("before-send.dynamodb.PutItem", freeze_at_the_entry)
            own_dynamodb_server.resume()
        async with asyncio.timeout(8):
            while not await store.since("v", 0, 10):  # the frozen write lands once the endpoint runs
                await asyncio.sleep(0.05)
            retried = await store.add(NewComment("v", "a", "once"), "k1")
        log = await store.since("v", 0, 10)
        assert [(c.seq, c.text) for c in log] == [(1, "once")], "stored twice"
        assert retried.seq == 1
    finally:
        await store.close()


async def test_a_post_given_up_on_an_unavailable_endpoint_logs_no_stray_error(
    own_dynamodb_server: DynamoServer, quick_timeouts: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A request that stops waiting (client gone, timed out) while its batch fails: the failure is
    the one 503 of the requests still there, never asyncio's "exception was never retrieved"."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    store = await open_storage(own_dynamodb_server.url())
    try:
        own_dynamodb_server.halt()
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.add(NewComment("v", "a", "given up"), "k1"), 0.2)
            with pytest.raises(StorageUnavailable):  # after the first batch has failed
                await store.add(NewComment("v", "a", "waited"), "k2")
        finally:
            own_dynamodb_server.resume()
        gc.collect()
        await asyncio.sleep(0)
        assert "never retrieved" not in caplog.text
    finally:
        await store.close()


async def test_a_claim_whose_batch_queued_past_half_its_lease_is_not_taken_over(
    own_dynamodb_server: DynamoServer, quick_timeouts: None
) -> None:
    """Writer A claims a key, then its batch queues (0.8 s of a 1 s lease) and its entry's PutItem is
    slow (1.2 s more, longer than the lease itself: a hot video's batch numbers its posts one after
    another): a busy writer, not a dead one. Writer B, posting the same key meanwhile, must wait for
    A's comment rather than take the key over (A would then erase its entry and answer 503)."""
    url = own_dynamodb_server.url()  # one table set for both writers
    a, b = await open_storage(url), await open_storage(url)
    claimed, claiming = asyncio.Event(), [False]

    def note_the_claim(params: Any, **_: Any) -> None:
        claiming[0] = a._t["keys"].encode() in params["body"]

    async def queue_after_the_claim(**_: Any) -> None:
        if claiming[0] and not claimed.is_set():
            claimed.set()
            await asyncio.sleep(0.8)  # the batch waits behind other writes: more than LEASE_S / 2

    async def slow_entry(request: Any, **_: Any) -> None:
        if b"_comments" in request.body and b"idem_key" in request.body:
            await asyncio.sleep(1.2)  # A stores past the claim's lease, twice over: only renewals keep it A's

    a._client.meta.events.register("before-call.dynamodb.PutItem", note_the_claim)
    a._client.meta.events.register("after-call.dynamodb.PutItem", queue_after_the_claim)
    a._client.meta.events.register("before-send.dynamodb.PutItem", slow_entry)
    try:
        async with asyncio.timeout(15):
            first = asyncio.create_task(a.add(NewComment("v", "a", "once"), "k1"))
            await claimed.wait()
            second = await b.add(NewComment("v", "a", "once"), "k1")
            got = await first
        assert (got.seq, second.seq) == (1, 1)
        log = await b.since("v", 0, 10)
        assert [(c.seq, c.text, c.deleted) for c in log] == [(1, "once", False)]
    finally:
        await a.close()
        await b.close()
