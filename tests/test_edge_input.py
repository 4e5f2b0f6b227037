"""What the edge accepts as a comment, and what it tells the public: issue 11 items 4, 11, 12."""

from __future__ import annotations

import unicodedata

import pytest

from livecomments.config import Config, ConfigError
from tests.fixtures.processes import free_port
from tests.helpers import all_seqs, post

EMOJI = "\U0001f600"


async def test_the_largest_valid_comment_is_accepted_sent_json_escaped(start_server, session):
    """2,000 emoji, each sent as the 12-byte escape \\ud83d\\ude00, and a 64-character author."""
    base = await start_server()
    text = "\\ud83d\\ude00" * 2000
    author = "\\ud83d\\ude00" * 64
    body = f'{{"text": "{text}", "author": "{author}"}}'.encode()
    assert len(body) > 24_000
    async with session.post(f"{base}/v1/videos/v/comments", data=body,
                            headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201, await r.text()
        comment = await r.json()
    assert comment["text"] == EMOJI * 2000 and comment["author"] == EMOJI * 64


def test_body_limit_is_derived_from_the_comment_limits():
    assert Config().max_body == 0
    assert Config().body_limit == Config().derived_body_limit >= 12 * (2000 + 64)
    assert Config(max_text=10_000).body_limit >= 12 * 10_064
    assert Config(max_body=1 << 20).body_limit == 1 << 20
    with pytest.raises(ConfigError, match="max_body"):
        Config(max_body=16384).validate()  # below what a valid comment may need


@pytest.mark.parametrize(("field", "value", "code"), [
    ("author", "\u200b\u200b", "author_empty"),  # two zero-width spaces
    ("author", "\u2066\u2069", "author_empty"),  # an isolate pair: stripped, nothing left
    ("author", "\u3164", "author_empty"),  # Hangul filler: a letter drawn blank
    ("author", "\u0301\u0301", "author_empty"),  # combining marks with no base
    ("author", "\ufeff \u2060", "author_empty"),  # BOM, space, word joiner
    ("text", "\u200b\u200c\u200d", "text_empty"),
    ("text", "\u00a0\u3000", "text_empty"),  # no-break and ideographic spaces
    ("author", "ana\nroot", "invalid_author"),  # a second log/UI line
    ("text", "hi\x1b[31m", "invalid_text"),  # terminal escapes
])
async def test_invisible_or_control_input_is_refused(start_server, session, field, value, code):
    base = await start_server()
    body = {"text": "hi", "author": "ana", field: value}
    async with session.post(f"{base}/v1/videos/v/comments", json=body) as r:
        assert r.status == 422
        assert (await r.json())["error"]["code"] == code
    assert await all_seqs(session, base, "v") == []


async def test_bidi_controls_are_stripped_and_text_is_nfc(start_server, session):
    base = await start_server()
    comment = await post(session, base, "v", text="ok \u202egnp.exe\u202c done", author="e\u0301va\u2067")
    assert comment["text"] == "ok gnp.exe done"
    assert comment["author"] == "\u00e9va" == unicodedata.normalize("NFC", "e\u0301va")
    # what a viewer with a zero-width joiner emoji or a newline sends stays as sent
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert (await post(session, base, "v", text=f"{family}\nline 2"))["text"] == f"{family}\nline 2"


async def test_readyz_names_a_reason_code_not_the_broker_address(start_server, session):
    port = free_port()  # nothing listens here: the broker link is down
    base = await start_server(broker=f"redis://127.0.0.1:{port}/0")
    async with session.get(f"{base}/readyz") as r:
        assert r.status == 503
        body = await r.json()
        raw = await r.text()
    assert body == {"status": "not_ready", "reason": "broker_unavailable"}
    assert str(port) not in raw and "127.0.0.1" not in raw


async def test_readyz_detail_only_with_expose_errors(start_server, session):
    port = free_port()
    base = await start_server(broker=f"redis://127.0.0.1:{port}/0", expose_errors=True)
    async with session.get(f"{base}/readyz") as r:
        body = await r.json()
    assert body["reason"] == "broker_unavailable" and str(port) in body["detail"]
