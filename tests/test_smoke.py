from tests.sse import open_stream


async def test_post_then_stream(start_server, session):
    base = await start_server()
    stream = await open_stream(session, base, "abc")
    async with session.post(f"{base}/v1/videos/abc/comments", json={"text": "hi", "author": "ana"}) as r:
        assert r.status == 201
        assert (await r.json())["seq"] == 1
    comment = await stream.next_comment()
    assert comment["text"] == "hi"
