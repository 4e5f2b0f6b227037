"""/metrics for an operator: process, requests by route template and status, POST latency,
rejections by code, build info; label values from fixed sets only."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from livecomments import __version__
from tests.sse import open_stream


async def scrape(session, base: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


async def test_process_and_build_metrics(start_server, session):
    base = await start_server()
    _, samples = await scrape(session, base)
    names = {name for name, _ in samples}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert name in names, name
    assert samples[("livecomments_build_info", (("version", __version__),))] == 1


async def test_requests_by_route_template_status_and_rejections_by_code(start_server, session):
    base = await start_server()
    comments = "/v1/videos/{video_id}/comments"
    stream = await open_stream(session, base, "video-secret-7")
    for body in ({"text": "ok", "author": "a"}, {"text": "", "author": "a"}, {"text": "x" * 3000, "author": "a"}):
        async with session.post(f"{base}/v1/videos/video-secret-7/comments", json=body):
            pass
    async with session.post(f"{base}/v1/videos/video-secret-7/comments", data=b"{not json",
                            headers={"Content-Type": "application/json"}):
        pass
    async with session.get(f"{base}/no/such/path-secret-9"):
        pass
    async with session.request("PROPFIND", f"{base}/v1/videos/video-secret-7/comments") as resp:
        assert resp.status == 405
    stream.close()
    text, samples = await scrape(session, base)

    def requests(route: str, method: str, status: str) -> float:
        key = ("livecomments_http_requests_total", (("method", method), ("route", route), ("status", status)))
        return samples.get(key, 0)

    assert requests(comments, "POST", "201") == 1
    assert requests(comments, "POST", "422") == 2
    assert requests(comments, "POST", "400") == 1
    assert requests("unmatched", "other", "405") == 1  # no route takes it; a method outside the set is "other"
    assert requests("/v1/videos/{video_id}/stream", "GET", "200") == 1  # counted when it went live
    assert requests("unmatched", "GET", "404") == 1
    rejected = {dict(labels)["code"]: value for (name, labels), value in samples.items()
                if name == "livecomments_comments_rejected_total"}
    assert rejected == {"text_empty": 1, "text_too_long": 1, "invalid_json": 1}, rejected
    assert samples[("livecomments_comment_post_seconds_count", ())] == 4
    for raw in ("video-secret-7", "path-secret-9", "PROPFIND"):  # no raw path, id or method becomes a label
        assert raw not in text, raw
