from tests.helpers import post
from tests.sse import open_stream


async def test_post_then_stream(start_server, session):
    base = await start_server()
    stream = await open_stream(session, base, "abc")
    assert (await post(session, base, "abc", "hi", "ana"))["seq"] == 1
    comment = await stream.next_comment()
    assert comment["text"] == "hi"
